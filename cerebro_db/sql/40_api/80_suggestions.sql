-- Suggestions for the user, made at each epoch's end (30_procedures/90_suggestions.sql):
--   SELECT suggestion_id, config_id, kind, reason, sql FROM suggestions WHERE workload_id = 1;
--   SELECT accept_suggestion(12);    -- carries out its sql as you, and logs it in config_events
--   SELECT dismiss_suggestion(13);   -- hides it; that kind is not suggested for that config again
--                                    -- until the config's status changes (for the workload: ever)

-- The live suggestions: neither accepted, dismissed nor superseded, for a config still as it was when
-- the suggestion was made (suggestion_is_live: one with an action is stale once its config's
-- epochs_done, status or max_epochs change; a warning with nothing to carry out stays until dismissed),
-- of a workload its user has not stopped. security_invoker: row-level security shows a user the
-- suggestions of their own workloads (and the user runs suggestion_is_live: 99_privileges.sql grants it).
CREATE OR REPLACE VIEW suggestions WITH (security_invoker = true) AS
SELECT s.suggestion_id,
       s.workload_id,
       s.config_id,
       s.kind,
       k.category,
       k.non_destructive,
       s.reason,
       s.evidence,
       s.expected_effect,
       s.sql,
       s.created_at,
       s.config_epochs_done AS epochs_done,
       s.config_status AS status,
       s.config_max_epochs AS max_epochs
FROM suggestion_log s
JOIN workloads w ON w.workload_id = s.workload_id
JOIN suggestion_kinds k ON k.kind = s.kind
LEFT JOIN configs c ON c.config_id = s.config_id
WHERE s.resolution IS NULL AND w.status <> 'stopped' AND suggestion_is_live(s, c)
ORDER BY s.workload_id, s.suggestion_id;

-- The caller's suggestion, checked to be theirs, still open and not stale, and locked: its config's
-- row too, so no unit commits an epoch between this check and the action.
-- SECURITY DEFINER: suggestion_log is the system's; this only reads it.
CREATE OR REPLACE FUNCTION _open_suggestion(suggestion_id bigint) RETURNS suggestion_log
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    picked suggestion_log;
    config configs;
BEGIN
    SELECT s.* INTO picked
    FROM suggestion_log s JOIN workloads w USING (workload_id)
    WHERE s.suggestion_id = _open_suggestion.suggestion_id AND caller_owns(w.owner)
    FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown suggestion %', coalesce(suggestion_id::text, 'NULL')
            USING HINT = 'SELECT suggestion_id, kind, reason FROM suggestions lists yours',
                  ERRCODE = 'undefined_object';
    END IF;
    IF picked.resolution = 'superseded' THEN
        RAISE EXCEPTION 'suggestion % is stale: a newer % suggestion replaced it', suggestion_id, picked.kind
            USING HINT = format('SELECT * FROM suggestions WHERE workload_id = %s shows the current ones',
                                picked.workload_id),
                  ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF picked.resolution IS NOT NULL THEN
        RAISE EXCEPTION 'suggestion % was % already', suggestion_id, picked.resolution
            USING HINT = format('SELECT * FROM suggestions WHERE workload_id = %s shows the open ones',
                                picked.workload_id),
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF picked.config_id IS NOT NULL AND picked.action IS NOT NULL THEN
        SELECT c.* INTO config FROM configs c WHERE c.config_id = picked.config_id FOR NO KEY UPDATE;
        IF NOT suggestion_is_live(picked, config) THEN
            RAISE EXCEPTION 'suggestion % is stale: it was made for config % at % epochs done, %, max_epochs %; the'
                            ' config is at % epochs done, %, max_epochs % now', suggestion_id, picked.config_id,
                            picked.config_epochs_done, picked.config_status, picked.config_max_epochs,
                            config.epochs_done, config.status, config.max_epochs
                USING HINT = format('SELECT * FROM suggestions WHERE config_id = %s shows its current ones',
                                    picked.config_id),
                      ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END IF;
    RETURN picked;
END
$$;

-- Whether what the suggestion carries out is done: the config stopped, running again or extended; or
-- ``made`` is the clone of its config, or the drill-down of its workload, that it asked for.
CREATE OR REPLACE FUNCTION suggestion_carried_out(picked suggestion_log, made int) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT CASE (SELECT k.carries_out FROM suggestion_kinds k WHERE k.kind = picked.kind)
        WHEN 'stop' THEN EXISTS (SELECT 1 FROM configs c WHERE c.config_id = picked.config_id
                                                           AND c.status = 'stopped')
        WHEN 'resume' THEN EXISTS (SELECT 1 FROM configs c WHERE c.config_id = picked.config_id
                                                             AND c.status IN ('pending', 'running'))
        WHEN 'extend' THEN EXISTS (SELECT 1 FROM configs c WHERE c.config_id = picked.config_id
                                                             AND c.max_epochs = (picked.action ->> 'max_epochs')::int)
        WHEN 'clone' THEN EXISTS (SELECT 1 FROM configs c WHERE c.config_id = made
                                                            AND c.cloned_from = picked.config_id)
        WHEN 'run_model_selection' THEN EXISTS (
            SELECT 1 FROM workloads w
            WHERE w.workload_id = made AND w.parent_workload_id = (picked.action ->> 'parent_workload')::int)
        ELSE false
    END
$$;

-- Records the caller's open suggestion as dismissed, or as accepted once what it carries out is done
-- (``made``: the config or workload the action created), and logs an acceptance in config_events
-- (actor: the caller, 'cerebro' for the system; linked to the suggestion) on its config, or on the configs a drill-down is around.
-- So the log cannot say a suggestion was accepted that was not carried out.
-- SECURITY DEFINER: users cannot write suggestion_log nor config_events.
CREATE OR REPLACE FUNCTION _resolve_suggestion(suggestion_id bigint, resolution text, made int DEFAULT NULL)
RETURNS suggestion_log
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    picked suggestion_log;
BEGIN
    IF resolution IS DISTINCT FROM 'accepted' AND resolution IS DISTINCT FROM 'dismissed' THEN
        RAISE EXCEPTION 'a suggestion is accepted or dismissed, not %', quote_nullable(resolution)
            USING HINT = 'SELECT accept_suggestion(id) or SELECT dismiss_suggestion(id)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.* INTO picked
    FROM suggestion_log s JOIN workloads w USING (workload_id)
    WHERE s.suggestion_id = _resolve_suggestion.suggestion_id AND caller_owns(w.owner) AND s.resolution IS NULL
    FOR UPDATE OF s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no open suggestion % of yours', coalesce(suggestion_id::text, 'NULL')
            USING HINT = 'SELECT suggestion_id, kind, reason FROM suggestions lists yours',
                  ERRCODE = 'undefined_object';
    END IF;
    IF resolution = 'accepted' AND picked.action IS NULL THEN
        RAISE EXCEPTION 'suggestion % (%) is a warning with nothing to carry out', suggestion_id, picked.kind
            USING HINT = format('read its reason and evidence, then SELECT dismiss_suggestion(%s)', suggestion_id),
                  ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF resolution = 'accepted' AND NOT suggestion_carried_out(picked, made) THEN
        RAISE EXCEPTION 'suggestion % (%) is not carried out', suggestion_id, picked.kind
            USING HINT = format('SELECT accept_suggestion(%s) carries it out and records it', suggestion_id),
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE suggestion_log s
    SET resolution = _resolve_suggestion.resolution, resolved_by = caller_actor(), resolved_at = clock_timestamp()
    WHERE s.suggestion_id = picked.suggestion_id
    RETURNING s.* INTO picked;
    IF resolution = 'accepted' THEN
        INSERT INTO config_events (config_id, kind, epochs_done, detail, actor, at, suggestion_id)
        SELECT c.config_id, 'accepted', c.epochs_done, format('suggestion %s (%s): %s', picked.suggestion_id,
                                                              picked.kind, picked.sql),
               caller_actor(), clock_timestamp(), picked.suggestion_id
        FROM configs c
        WHERE c.config_id = picked.config_id
           OR (picked.config_id IS NULL
               AND c.config_id IN (SELECT v::int FROM jsonb_array_elements_text(picked.evidence -> 'configs') v));
    END IF;
    RETURN picked;
END
$$;

-- Carries the suggestion out through the same SQL API its sql column shows, as the caller (invoker
-- rights: a user's grants, row-level security, limits and the status machine apply; the system's
-- acceptance, 95_autonomy.sql, goes the same way as the system). Returns what it created (a clone, a
-- drill-down's workload) and what it did.
CREATE OR REPLACE FUNCTION _carry_out_suggestion(s suggestion_log, OUT made int, OUT done text)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    a jsonb := s.action;
BEGIN
    CASE (SELECT k.carries_out FROM suggestion_kinds k WHERE k.kind = s.kind)
    WHEN 'stop' THEN
        UPDATE configs SET status = 'stopped' WHERE config_id = s.config_id;
        done := format('config %s stopped', s.config_id);
    WHEN 'resume' THEN
        UPDATE configs SET status = 'running' WHERE config_id = s.config_id;
        done := format('config %s resumed', s.config_id);
    WHEN 'extend' THEN
        UPDATE configs SET max_epochs = (a ->> 'max_epochs')::int, status = 'running' WHERE config_id = s.config_id;
        done := format('config %s extended to %s epochs and resumed', s.config_id, a ->> 'max_epochs');
    WHEN 'clone' THEN
        made := clone_config(s.config_id, a -> 'overrides');
        done := format('config %s created: a clone of config %s with %s', made, s.config_id, a -> 'overrides');
    WHEN 'run_model_selection' THEN
        made := run_model_selection(a ->> 'dataset', a ->> 'model', a -> 'search_space', procedure => a ->> 'procedure',
                                    num_configs => (a ->> 'num_configs')::int,
                                    max_epochs => (a ->> 'max_epochs')::int, name => a ->> 'name',
                                    parent_workload => (a ->> 'parent_workload')::int, warm_start => true);
        done := format('workload %s started: %s', made, a ->> 'name');
    END CASE;
END
$$;

-- Carries the caller's suggestion out (_carry_out_suggestion), then records it, and returns what it
-- did. A refused action changes nothing: the suggestion stays open.
CREATE OR REPLACE FUNCTION accept_suggestion(suggestion_id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    s suggestion_log := _open_suggestion(suggestion_id);
    carried record;
BEGIN
    IF s.action IS NULL THEN  -- a warning: _resolve_suggestion refuses it with its hint
        PERFORM _resolve_suggestion(suggestion_id, 'accepted');
    END IF;
    carried := _carry_out_suggestion(s);
    PERFORM _resolve_suggestion(suggestion_id, 'accepted', carried.made);
    RETURN carried.done;
END
$$;

CREATE OR REPLACE FUNCTION dismiss_suggestion(suggestion_id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    s suggestion_log := _resolve_suggestion((_open_suggestion(suggestion_id)).suggestion_id, 'dismissed');
BEGIN
    RETURN format('suggestion %s (%s) dismissed: not suggested again for %s', s.suggestion_id, s.kind,
                  CASE WHEN s.config_id IS NULL THEN format('workload %s', s.workload_id)
                       ELSE format('config %s until its status changes', s.config_id) END);
END
$$;
