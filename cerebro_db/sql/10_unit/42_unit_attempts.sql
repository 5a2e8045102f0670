-- The crash and retry budgets. The scheduler records every claimed unit in unit_attempts on a
-- connection of its own before the unit trains, so a unit that ends its server process (the OOM
-- killer, a native crash) still leaves its attempt behind; the unit's transaction marks it
-- committed. The scheduler classifies how a unit that did not commit ended
-- (cerebro_db/unit_failures.py) and settles the attempt here; these functions decide what it
-- costs the config. A config with an unsettled attempt takes no unit (claim_unit), so a
-- budget is spent exactly.
--   crashed:     its server process ended without a word       -> cerebro.max_unit_crashes in a row
--   retried:     rolled back for a reason that may pass         -> cerebro.max_unit_retries in a row
--   failed:      the config's own error (or its unit_timeout)   -> the config fails now
--   bystander, unavailable, abandoned: not the config's doing  -> free
-- "In a row": since the config's last committed unit and its last resume (a fresh budget).

CREATE OR REPLACE FUNCTION begin_unit_attempt(config_id int, segment int, epoch int) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    INSERT INTO unit_attempts (config_id, segment, epoch)
    VALUES (begin_unit_attempt.config_id, begin_unit_attempt.segment, begin_unit_attempt.epoch)
    RETURNING attempt_id
$$;

-- In the unit's own transaction: the attempt is committed exactly when the hop is.
CREATE OR REPLACE FUNCTION commit_unit_attempt(attempt_id bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    UPDATE unit_attempts a SET outcome = 'committed', ended_at = clock_timestamp(), detail = NULL
    WHERE a.attempt_id = commit_unit_attempt.attempt_id
$$;

-- A budget setting of the scheduler's session (database or role level: tenants cannot change it).
CREATE OR REPLACE FUNCTION unit_budget(setting text, fallback int) RETURNS int
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    value text := nullif(current_setting(setting, true), '');
BEGIN
    IF value IS NULL THEN
        RETURN fallback;
    END IF;
    IF value !~ '^\s*[0-9]{1,9}\s*$' OR value::int < 1 THEN
        RAISE EXCEPTION '% must be a whole number of at least 1, got %', setting, quote_literal(value)
            USING HINT = format('ALTER DATABASE ... SET %s = %s (the default)', setting, fallback),
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN value::int;
END
$$;

-- How many of the config's attempts ended with outcome in a row: since its last committed unit
-- and since it last became running (a resume, or its first hop).
CREATE OR REPLACE FUNCTION unit_attempts_in_a_row(config_id int, outcome text) RETURNS int
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT count(*)::int
    FROM unit_attempts a
    WHERE a.config_id = unit_attempts_in_a_row.config_id
      AND a.outcome = unit_attempts_in_a_row.outcome
      AND a.attempt_id > coalesce((SELECT max(c.attempt_id) FROM unit_attempts c
                                   WHERE c.config_id = unit_attempts_in_a_row.config_id
                                     AND c.outcome = 'committed'), 0)
      AND a.started_at > coalesce((SELECT max(e.at) FROM config_events e
                                   WHERE e.config_id = unit_attempts_in_a_row.config_id AND e.kind = 'running'),
                                  '-infinity')
$$;

-- Settle an attempt that did not commit; returns the reason the config failed for, if it did.
CREATE OR REPLACE FUNCTION end_unit_attempt(attempt_id bigint, outcome text, detail text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    attempt unit_attempts;
    budget int;
    in_a_row int;
    reason text;
BEGIN
    UPDATE unit_attempts a SET outcome = end_unit_attempt.outcome, detail = end_unit_attempt.detail,
                               ended_at = clock_timestamp()
    WHERE a.attempt_id = end_unit_attempt.attempt_id AND a.outcome IS NULL
    RETURNING a.* INTO attempt;
    IF NOT FOUND THEN
        RETURN NULL;  -- settled already (a repeated call after a lost reply)
    END IF;
    IF outcome = 'failed' THEN
        reason := detail;
    ELSIF outcome = 'crashed' THEN
        budget := unit_budget('cerebro.max_unit_crashes', 3);
        in_a_row := unit_attempts_in_a_row(attempt.config_id, 'crashed');
        IF in_a_row >= budget THEN
            reason := format('its unit ended the server process %s times in a row (cerebro.max_unit_crashes = %s); '
                             'last seen training epoch %s on segment %s. Most likely it ran out of memory (the '
                             'kernel''s OOM killer) or crashed in native code: lower batch_size or the model''s '
                             'size, then resume it (UPDATE configs SET status = ''running'')',
                             in_a_row, budget, attempt.epoch, attempt.segment);
        END IF;
    ELSIF outcome = 'retried' THEN
        budget := unit_budget('cerebro.max_unit_retries', 3);
        in_a_row := unit_attempts_in_a_row(attempt.config_id, 'retried');
        IF in_a_row >= budget THEN
            reason := format('its unit was rolled back %s times in a row (cerebro.max_unit_retries = %s), last '
                             'while training epoch %s on segment %s: %s',
                             in_a_row, budget, attempt.epoch, attempt.segment, detail);
        END IF;
    END IF;
    IF reason IS NOT NULL THEN
        PERFORM fail_config(attempt.config_id, reason);
    END IF;
    RETURN reason;
END
$$;

-- At a scheduler's start: attempts a dead scheduler left open were not seen to end; they cost nothing.
-- A begin whose reply was lost (the server restarted during it) may have committed its attempt, which
-- would keep its config from every claim. An open attempt of the config that no unit in flight holds
-- (a unit holds its config's lock from its claim to its end: active_units) is that one: abandoned, it
-- costs nothing and frees the config. Returns how many it abandoned.
CREATE OR REPLACE FUNCTION abandon_lost_attempts(config_id int) RETURNS int
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    WITH abandoned AS (
        UPDATE unit_attempts a SET outcome = 'abandoned', ended_at = clock_timestamp(),
                                   detail = 'its begin lost its reply (the server restarted)'
        WHERE a.config_id = abandon_lost_attempts.config_id AND a.outcome IS NULL
          AND NOT EXISTS (SELECT 1 FROM active_units u WHERE u.config_id = abandon_lost_attempts.config_id)
        RETURNING 1
    )
    SELECT count(*)::int FROM abandoned
$$;

CREATE OR REPLACE FUNCTION abandon_unit_attempts() RETURNS int
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    WITH abandoned AS (
        UPDATE unit_attempts a SET outcome = 'abandoned', ended_at = clock_timestamp()
        WHERE a.outcome IS NULL
        RETURNING 1
    )
    SELECT count(*)::int FROM abandoned
$$;
