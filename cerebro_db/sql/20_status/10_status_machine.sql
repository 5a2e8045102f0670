-- The status machine: every status change of a config or a workload, and nothing else.
--
-- status_transitions is the one list of legal changes. Both ways in end in the same triggers, which
-- check a change against it and log it (config_events):
--   users:      plain SQL, UPDATE configs / workloads SET status (the dashboard does the same). The
--               BEFORE triggers look the change up as the user's; the AFTER triggers cascade it.
--   the system: the named transitions below, config_transition(config, 'fail' | 'prune' | ...) and
--               workload_transition(workload, 'finish' | 'reopen'), which make the same UPDATE as the
--               schema owner with cerebro.internal = on (is_internal(): a tenant cannot pose as it).
--               Neither is granted to cerebro_user: a user reaches only the user's rows of the list.
-- A refused change raises and changes nothing; a system transition that no longer applies (a user
-- stopped the config meanwhile) does nothing and returns false.

-- One row per (object, from_status, to_status, actor). from_status NULL: a new row. requires:
--   epochs left / no epoch left: the config's max_epochs above / not above its epochs_done;
--   no config active:            none of the workload's configs pending or running.
-- event_kind: what config_events logs (a procedure's stop is 'pruned', never read from a message).
CREATE OR REPLACE VIEW status_transitions WITH (security_invoker = true) AS
SELECT * FROM (VALUES
    ('config', 'create', NULL, 'pending', 'user', 'created', NULL),
    ('config', 'create', NULL, 'pending', 'system', 'created', NULL),
    ('config', 'stop', 'pending', 'stopped', 'user', 'stopped', NULL),
    ('config', 'stop', 'running', 'stopped', 'user', 'stopped', NULL),
    ('config', 'resume', 'stopped', 'running', 'user', 'running', 'epochs left'),
    ('config', 'resume', 'pending', 'running', 'user', 'running', 'epochs left'),
    ('config', 'resume', 'completed', 'running', 'user', 'running', 'epochs left'),
    ('config', 'resume', 'failed', 'running', 'user', 'running', 'epochs left'),
    ('config', 'start', 'pending', 'running', 'system', 'running', NULL),
    -- cruise control and autopilot accepting a resume or an extend suggestion (95_autonomy.sql)
    ('config', 'reopen', 'stopped', 'running', 'system', 'running', 'epochs left'),
    ('config', 'reopen', 'completed', 'running', 'system', 'running', 'epochs left'),
    ('config', 'complete', 'pending', 'completed', 'system', 'completed', 'no epoch left'),
    ('config', 'complete', 'running', 'completed', 'system', 'completed', 'no epoch left'),
    ('config', 'complete', 'stopped', 'completed', 'system', 'completed', 'no epoch left'),
    ('config', 'fail', 'pending', 'failed', 'system', 'failed', NULL),
    ('config', 'fail', 'running', 'failed', 'system', 'failed', NULL),
    ('config', 'prune', 'pending', 'stopped', 'system', 'pruned', NULL),
    ('config', 'prune', 'running', 'stopped', 'system', 'pruned', NULL),
    ('workload', 'stop', 'running', 'stopped', 'user', NULL, NULL),
    ('workload', 'stop', 'completed', 'stopped', 'user', NULL, NULL),
    ('workload', 'resume', 'stopped', 'running', 'user', NULL, NULL),
    ('workload', 'resume', 'completed', 'running', 'user', NULL, NULL),
    ('workload', 'finish', 'running', 'completed', 'system', NULL, 'no config active'),
    ('workload', 'reopen', 'stopped', 'running', 'system', NULL, NULL),
    ('workload', 'reopen', 'completed', 'running', 'system', NULL, NULL)
) AS t(object, transition, from_status, to_status, actor, event_kind, requires);

-- The transition from_status -> to_status by actor, if it is legal now (else a row of NULLs).
-- work_left: a config's max_epochs - epochs_done; for a workload, 1 if a config is active, else 0.
CREATE OR REPLACE FUNCTION legal_transition(object text, from_status text, to_status text, actor text,
                                            work_left int)
RETURNS status_transitions
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT t.*
    FROM status_transitions t
    WHERE t.object = legal_transition.object
      AND t.from_status IS NOT DISTINCT FROM legal_transition.from_status
      AND t.to_status = legal_transition.to_status
      AND t.actor = legal_transition.actor
      AND CASE t.requires WHEN 'epochs left' THEN legal_transition.work_left > 0
                          WHEN 'no epoch left' THEN legal_transition.work_left <= 0
                          WHEN 'no config active' THEN legal_transition.work_left = 0
                          ELSE true END
$$;

-- The actor's changes of object, for a refusal's hint: 'pending/running -> stopped (stop); ...'.
CREATE OR REPLACE FUNCTION transitions_hint(object text, actor text) RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT string_agg(format('%s -> %s (%s%s)', g.froms, g.to_status, g.transition, ', needs ' || g.requires), '; '
                      ORDER BY g.first)
    FROM (SELECT t.transition, t.to_status, t.requires, string_agg(t.from_status, '/' ORDER BY t.n) AS froms,
                 min(t.n) AS first
          FROM (SELECT s.*, row_number() OVER () AS n FROM status_transitions s) t
          WHERE t.object = transitions_hint.object AND t.actor = transitions_hint.actor AND t.from_status IS NOT NULL
          GROUP BY t.transition, t.to_status, t.requires) g
$$;

-- Whether any of the workload's configs can still take a unit (pending or running): the workload
-- finishes once none can.
CREATE OR REPLACE FUNCTION workload_has_active_configs(workload_id int) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM configs c
                   WHERE c.workload_id = workload_has_active_configs.workload_id
                     AND c.status IN ('pending', 'running'))
$$;

-- Whether waiting for the workload is over: it is no longer running (finish_workload decided that
-- none of its configs can take another unit, or its user stopped it), or it does not exist.
-- CALL wait_for_workload, `cerebro-db wait` and the fault harness all ask this.
CREATE OR REPLACE FUNCTION workload_finished(workload_id int) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT NOT EXISTS (SELECT 1 FROM workloads w
                       WHERE w.workload_id = workload_finished.workload_id AND w.status = 'running')
$$;

-- The to_status of the system's transition named transition (raises if there is none).
CREATE OR REPLACE FUNCTION system_transition_target(object text, transition text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    target text;
BEGIN
    SELECT DISTINCT t.to_status INTO target
    FROM status_transitions t
    WHERE t.object = system_transition_target.object AND t.actor = 'system'
      AND t.transition = system_transition_target.transition AND t.from_status IS NOT NULL;
    IF target IS NULL THEN
        RAISE EXCEPTION 'no % transition of the system is named %', object, quote_literal(transition)
            USING HINT = 'the system''s: ' || transitions_hint(object, 'system'), ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN target;
END
$$;

-- The system's change of a config (start, complete, fail, prune), with the reason config_events
-- logs (and configs.error keeps, for a failure). Returns whether it applied: a config whose status
-- or epochs no longer allow it (a user stopped or resumed it meanwhile) is left as it is. It does
-- not finish the workload: outside a unit, callers call finish_workload next; inside one,
-- record_hop does, after the procedure's hook (taking the workload's row lock mid-unit would
-- invert the lock order with a user's stop).
CREATE OR REPLACE FUNCTION config_transition(config_id int, transition text, reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    target text := system_transition_target('config', transition);
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
    applied boolean;
BEGIN
    PERFORM set_config('cerebro.internal', 'on', true);
    UPDATE configs c SET status = target, event_detail = reason,
                         error = CASE WHEN target = 'failed' THEN reason ELSE c.error END
    WHERE c.config_id = config_transition.config_id
      AND (legal_transition('config', c.status, target, 'system', c.max_epochs - c.epochs_done)).transition
          = config_transition.transition;
    applied := FOUND;
    PERFORM set_config('cerebro.internal', was_internal, true);
    RETURN applied;
END
$$;

-- The system's change of a workload (finish, reopen); returns whether it applied.
CREATE OR REPLACE FUNCTION workload_transition(workload_id int, transition text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    target text := system_transition_target('workload', transition);
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
    applied boolean;
BEGIN
    PERFORM set_config('cerebro.internal', 'on', true);
    UPDATE workloads w SET status = target
    WHERE w.workload_id = workload_transition.workload_id
      AND (legal_transition('workload', w.status, target, 'system',
                            workload_has_active_configs(w.workload_id)::int)).transition
          = workload_transition.transition;
    applied := FOUND;
    PERFORM set_config('cerebro.internal', was_internal, true);
    RETURN applied;
END
$$;

-- A workload is completed once none of its configs can take another unit. Two segments may
-- finish its last two configs at the same moment, each still seeing the other's config running:
-- the row lock serializes them, and the UPDATE, a new statement, then sees the other's committed
-- config.
CREATE OR REPLACE FUNCTION finish_workload(workload_id int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM workloads w WHERE w.workload_id = finish_workload.workload_id FOR NO KEY UPDATE;
    PERFORM workload_transition(workload_id, 'finish');
END
$$;

-- A config whose unit failed for a reason of its own (divergence, bad model, its crash or retry
-- budget spent) stops taking units; the message stays in configs.error.
CREATE OR REPLACE FUNCTION fail_config(config_id int, error text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    PERFORM config_transition(config_id, 'fail', error);
    PERFORM finish_workload(c.workload_id) FROM configs c WHERE c.config_id = fail_config.config_id;
END
$$;

-- A committed hop advances the config: its epochs done, then start (pending -> running) or, once
-- its last epoch is done, complete. A user may have stopped the config while the unit trained:
-- their status stays, unless this hop finished the config's last epoch (then nothing is left to
-- resume). The workload is finished by record_hop (see config_transition).
CREATE OR REPLACE FUNCTION config_hop_committed(config_id int, epochs_done int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
    config record;
BEGIN
    PERFORM set_config('cerebro.internal', 'on', true);  -- epochs_done is the system's to write
    UPDATE configs c SET epochs_done = config_hop_committed.epochs_done
    WHERE c.config_id = config_hop_committed.config_id
    RETURNING c.status, c.max_epochs INTO config;
    PERFORM set_config('cerebro.internal', was_internal, true);
    IF config_hop_committed.epochs_done >= config.max_epochs THEN
        PERFORM config_transition(config_id, 'complete');
    ELSIF config.status = 'pending' THEN
        PERFORM config_transition(config_id, 'start');
    END IF;
END
$$;

-- Both ways in: stamp the change into the row (what, who, why; the AFTER trigger logs it from
-- there, so no setting changed between the two triggers can forge it) after checking it against
-- status_transitions. Invoker rights: is_internal() is true only for the schema owner. A user's
-- new config starts pending with nothing trained; the system's reason is its own statement's only
-- (a detail left from an earlier change is not).
CREATE OR REPLACE FUNCTION configs_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    internal boolean := is_internal();
    actor text := CASE WHEN internal THEN 'system' ELSE 'user' END;
    change status_transitions;
BEGIN
    NEW.event_actor := event_actor();
    IF TG_OP = 'INSERT' THEN
        IF NOT internal THEN
            NEW.status := 'pending';
            NEW.epochs_done := 0;
            NEW.error := NULL;
            NEW.event_detail := NULL;
        END IF;
        change := legal_transition('config', NULL, NEW.status, actor, NULL);
        IF change.transition IS NULL THEN
            RAISE EXCEPTION 'a new config starts pending, not %', NEW.status
                USING HINT = 'leave status out of the INSERT', ERRCODE = 'invalid_parameter_value';
        END IF;
        NEW.event_kind := change.event_kind;
        RETURN NEW;
    END IF;
    IF NOT internal OR NEW.event_detail IS NOT DISTINCT FROM OLD.event_detail THEN
        NEW.event_detail := NULL;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        change := legal_transition('config', OLD.status, NEW.status, actor, NEW.max_epochs - NEW.epochs_done);
        IF change.transition IS NULL THEN
            RAISE EXCEPTION 'config %: cannot change status from % to %', OLD.config_id, OLD.status, NEW.status
                USING HINT = CASE WHEN internal THEN 'the system''s: ' || transitions_hint('config', 'system')
                                  ELSE 'allowed: ' || transitions_hint('config', 'user') || '; resuming needs '
                                       'max_epochs above the epochs done (UPDATE configs SET max_epochs = ..., '
                                       'status = ''running''); a failed config retries from its last committed '
                                       'hop' END,
                      ERRCODE = 'invalid_parameter_value';
        END IF;
        NEW.event_kind := change.event_kind;
        IF NOT internal THEN
            NEW.error := NULL;
        END IF;
    END IF;
    -- A user's max_epochs left a pending or running config nothing to train: the system's
    -- 'complete' at once, on their statement (so it is logged as theirs).
    IF NOT internal AND NEW.status IN ('pending', 'running') AND NEW.epochs_done >= NEW.max_epochs THEN
        change := legal_transition('config', OLD.status, 'completed', 'system', NEW.max_epochs - NEW.epochs_done);
        NEW.status := change.to_status;
        NEW.event_kind := change.event_kind;
        NEW.event_detail := format('max_epochs lowered to the %s epoch%s done: nothing left to train', NEW.epochs_done,
                                   CASE WHEN NEW.epochs_done = 1 THEN '' ELSE 's' END);
    END IF;
    RETURN NEW;
END
$$;

-- After configs_before_insert and configs_guard (BEFORE triggers fire in name order), which check
-- the other columns.
CREATE OR REPLACE TRIGGER configs_status
BEFORE INSERT OR UPDATE ON configs FOR EACH ROW EXECUTE FUNCTION configs_status();

-- Logs every status change and every max_epochs change (kind 'max_epochs'; one UPDATE that does
-- both, a resume with more epochs, logs two events: max_epochs first, as it allowed the resume);
-- at is clock_timestamp(), so the events of one transaction keep their order in time too.
-- Cascades to the workload: a config that can take units again (a resume, a new config) reopens
-- it, and a user's change that leaves a config unable to run may finish it (the system's
-- transitions leave that to their callers: see config_transition).
-- SECURITY DEFINER: users read the log but cannot write it, and finishing must see every config of
-- the workload.
CREATE OR REPLACE FUNCTION configs_after_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    -- Read raw: under SECURITY DEFINER is_internal() would be true for anyone who sets it.
    was_internal boolean := coalesce(current_setting('cerebro.internal', true), '') = 'on';
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.max_epochs IS DISTINCT FROM OLD.max_epochs THEN
        INSERT INTO config_events (config_id, kind, epochs_done, detail, actor, at)
        VALUES (NEW.config_id, 'max_epochs', NEW.epochs_done,
                format('max_epochs %s -> %s', OLD.max_epochs, NEW.max_epochs), NEW.event_actor, clock_timestamp());
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO config_events (config_id, kind, epochs_done, detail, actor, at)
        VALUES (NEW.config_id, NEW.event_kind, NEW.epochs_done, NEW.event_detail, NEW.event_actor, clock_timestamp());
    END IF;
    IF NEW.status IN ('pending', 'running') AND (TG_OP = 'INSERT' OR OLD.status NOT IN ('pending', 'running')) THEN
        PERFORM workload_transition(NEW.workload_id, 'reopen');
    ELSIF TG_OP = 'UPDATE' AND OLD.status IN ('pending', 'running') AND NEW.status NOT IN ('pending', 'running')
          AND NOT was_internal THEN
        -- (A user who sets cerebro.internal only skips this; settle_unrunnable_configs finishes it.)
        PERFORM finish_workload(NEW.workload_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER configs_after_change
AFTER INSERT OR UPDATE ON configs FOR EACH ROW EXECUTE FUNCTION configs_after_change();

-- A workload's status change, by a user (stop, resume) or the system (finish, reopen), checked
-- against status_transitions; after workloads_guard, which checks the other columns.
CREATE OR REPLACE FUNCTION workloads_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    internal boolean := is_internal();
    change status_transitions;
BEGIN
    change := legal_transition('workload', OLD.status, NEW.status, CASE WHEN internal THEN 'system' ELSE 'user' END,
                               workload_has_active_configs(OLD.workload_id)::int);
    -- The system's finish decided in its UPDATE that no config was active; this statement's newer snapshot
    -- may see one a user added or resumed meanwhile: the change no longer applies, it is skipped (FOUND is
    -- false for workload_transition), never an error in the unit that finished the workload.
    IF change.transition IS NULL AND internal AND EXISTS (
        SELECT 1 FROM status_transitions t
        WHERE t.object = 'workload' AND t.actor = 'system' AND t.from_status = OLD.status AND t.to_status = NEW.status)
    THEN
        RETURN NULL;
    END IF;
    IF change.transition IS NULL THEN
        RAISE EXCEPTION 'workload %: cannot change status from % to %', OLD.workload_id, OLD.status, NEW.status
            USING HINT = CASE WHEN internal THEN 'the system''s: ' || transitions_hint('workload', 'system')
                              ELSE 'allowed: ' || transitions_hint('workload', 'user') || '; stopping stops its '
                                   'unfinished configs, resuming resumes its stopped ones' END,
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER workloads_status
BEFORE UPDATE OF status ON workloads FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION workloads_status();

-- A user's stop or resume of a workload cascades to its configs, as their own stop or resume
-- (invoker rights: logged as theirs, and limited to their rows).
CREATE OR REPLACE FUNCTION workloads_after_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF NOT is_internal() AND NEW.status = 'stopped' THEN
        UPDATE configs SET status = 'stopped'
        WHERE workload_id = NEW.workload_id AND status IN ('pending', 'running');
    ELSIF NOT is_internal() AND NEW.status = 'running' THEN
        UPDATE configs SET status = 'running'
        WHERE workload_id = NEW.workload_id AND status = 'stopped' AND epochs_done < max_epochs;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER workloads_after_status
AFTER UPDATE OF status ON workloads FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status) EXECUTE FUNCTION workloads_after_status();

-- Pending or running configs that can never get a unit, what becomes of them and why:
--   completed: no epoch left (epochs_done >= max_epochs; the status trigger completes a user's
--              change at once, this catches any other way in);
--   failed:    the dataset is gone, or spread over segments that are not registered (its epochs
--              could never finish; cerebro-db up refuses to change the segments while a workload
--              runs, so a config that failed for it can be resumed once the segments are back).
-- settle_unrunnable_configs() acts on them; cerebro_db.testing.verify checks that none is left.
CREATE OR REPLACE FUNCTION unrunnable_configs()
RETURNS TABLE (config_id int, workload_id int, outcome text, reason text)
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT c.config_id, c.workload_id, why.outcome, why.reason
    FROM configs c
    JOIN workloads w USING (workload_id)
    LEFT JOIN datasets d ON d.name = w.dataset
    CROSS JOIN LATERAL (
        SELECT CASE WHEN c.epochs_done >= c.max_epochs THEN 'completed' ELSE 'failed' END,
               CASE WHEN c.epochs_done >= c.max_epochs
                        THEN format('max_epochs (%s) reached: no epoch left to train', c.max_epochs)
                    WHEN d.name IS NULL
                        THEN format('dataset %s no longer exists', w.dataset)
                    ELSE format('dataset %s is spread over %s segments, but only %s of segments 0-%s are registered;'
                                ' register them again (cerebro-db up --segments) and resume the config, or prepare'
                                ' the dataset again for the segments there are',
                                w.dataset, d.num_segments, registered.n, d.num_segments - 1) END
        FROM (SELECT count(*) AS n FROM segments s
              WHERE s.segment >= 0 AND s.segment < d.num_segments) registered
        WHERE c.epochs_done >= c.max_epochs OR d.name IS NULL OR registered.n < d.num_segments
    ) why(outcome, reason)
    WHERE c.status IN ('pending', 'running')
$$;

-- Completes or fails every pending or running config that can never get a unit (see
-- unrunnable_configs: the cases no trigger sees), with the reason in configs.error (failures)
-- and config_events, and finishes the workloads left with nothing to run. The scheduler calls
-- it whenever a segment finds nothing to claim: with nothing to settle it is two reads (of the
-- active configs and of the running workloads) and takes no lock. Returns how many configs it
-- found unrunnable.
CREATE OR REPLACE FUNCTION settle_unrunnable_configs() RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    stuck record;
    settled int := 0;
BEGIN
    FOR stuck IN SELECT * FROM unrunnable_configs() ORDER BY config_id LOOP
        IF stuck.outcome = 'failed' THEN
            PERFORM fail_config(stuck.config_id, stuck.reason);
        ELSE
            -- Checked again on the row's latest version: a user may have raised max_epochs meanwhile.
            PERFORM config_transition(stuck.config_id, 'complete', stuck.reason);
            PERFORM finish_workload(stuck.workload_id);
        END IF;
        settled := settled + 1;
    END LOOP;
    -- Workloads whose configs all stopped or finished without a finish_workload call.
    PERFORM finish_workload(w.workload_id)
    FROM workloads w
    WHERE w.status = 'running' AND NOT workload_has_active_configs(w.workload_id);
    RETURN settled;
END
$$;
