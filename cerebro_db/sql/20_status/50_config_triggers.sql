-- The config status machine. Users (plain SQL, dashboard) may:
--   stop:    pending | running -> stopped        (lands at the next hop; the unit in flight commits)
--   resume:  stopped | completed | failed -> running   (from the last committed state, mid-epoch
--                                 included; needs max_epochs above epochs_done: raise it to continue)
--   change max_epochs (not below epochs_done; down to epochs_done completes a pending or running
--                      config at once: it has nothing left to train).
-- The system's own updates (run_unit, fail_config, procedures) run with cerebro.internal = on.
-- Every change is logged in config_events from the row itself (event_kind, event_actor,
-- event_detail: stamped by the BEFORE triggers below, never writable by users): the system
-- gives its reason by setting event_detail in its own INSERT or UPDATE.
-- A config that can never get a unit does not stay pending or running: the triggers below
-- complete it (max_epochs lowered) and finish its workload (the user stopped its last active
-- config); settle_unrunnable_configs() handles what no trigger sees.

CREATE OR REPLACE FUNCTION _complete_params(model text, params jsonb, feature_shape int[], registered boolean)
RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.complete_params(model, params, feature_shape, registered)
$$;

-- INSERT INTO configs (workload_id, params): params are validated against the workload's
-- model and completed with defaults; max_epochs comes from the workload, within the owner's
-- limit (the system's own inserts, clone_config and procedures, check their limits themselves).
CREATE OR REPLACE FUNCTION configs_before_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    workload record;
BEGIN
    SELECT w.model, w.max_epochs, w.owner, d.feature_shape INTO workload
    FROM workloads w JOIN datasets d ON d.name = w.dataset WHERE w.workload_id = NEW.workload_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown workload %', NEW.workload_id USING ERRCODE = 'undefined_object';
    END IF;
    NEW.max_epochs := coalesce(NEW.max_epochs, workload.max_epochs);
    IF NOT is_internal() THEN
        PERFORM check_max_epochs(workload.owner, NEW.max_epochs);
    END IF;
    NEW.params := raise_if_error(_complete_params(workload.model, NEW.params, workload.feature_shape,
                                                  is_registered_model(workload.model)));
    -- The memory guard (45_memory_guard.sql): user inserts and clones are refused here; configs a
    -- procedure suggests during a hop are left to their first unit (refusing would undo the hop).
    IF NOT is_internal() OR NEW.cloned_from IS NOT NULL THEN
        PERFORM raise_if_error(_check_training_memory(NEW.workload_id, NEW.params));
    END IF;
    NEW.event_kind := 'created';
    NEW.event_actor := event_actor();
    IF NOT is_internal() THEN
        NEW.status := 'pending';
        NEW.epochs_done := 0;
        NEW.error := NULL;
        NEW.event_detail := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_before_insert
BEFORE INSERT ON configs FOR EACH ROW EXECUTE FUNCTION configs_before_insert();

CREATE OR REPLACE FUNCTION configs_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
    NEW.event_actor := event_actor();
    -- The reason is this statement's only if it set one: a detail left from an earlier change is not.
    IF NOT is_internal() OR NEW.event_detail IS NOT DISTINCT FROM OLD.event_detail THEN
        NEW.event_detail := NULL;
    END IF;
    -- Typed, so that no decision reads a message: the system stops a config only to prune it
    -- (a procedure, e.g. hyperband); users stop, resume and complete (max_epochs lowered).
    NEW.event_kind := CASE WHEN is_internal() AND NEW.status = 'stopped' THEN 'pruned' ELSE NEW.status END;
    IF is_internal() THEN
        RETURN NEW;
    END IF;
    IF (NEW.config_id, NEW.workload_id, NEW.params, NEW.epochs_done, NEW.seed, NEW.cloned_from, NEW.created_by,
        NEW.created_at) IS DISTINCT FROM
       (OLD.config_id, OLD.workload_id, OLD.params, OLD.epochs_done, OLD.seed, OLD.cloned_from, OLD.created_by,
        OLD.created_at) THEN
        RAISE EXCEPTION 'config %: only status and max_epochs can be changed', OLD.config_id
            USING HINT = 'to try other params, SELECT add_config(workload, params) or clone_config(config, overrides)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_epochs IS NULL OR NEW.max_epochs < greatest(OLD.epochs_done, 1) THEN
        RAISE EXCEPTION 'config %: max_epochs must be at least % (1, and not below the epochs already trained), got %',
            OLD.config_id, greatest(OLD.epochs_done, 1), coalesce(NEW.max_epochs::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_epochs > OLD.max_epochs THEN
        PERFORM check_max_epochs((SELECT w.owner FROM workloads w WHERE w.workload_id = OLD.workload_id),
                                 NEW.max_epochs);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT ((OLD.status IN ('pending', 'running') AND NEW.status = 'stopped')
                OR (OLD.status IN ('stopped', 'pending', 'completed', 'failed') AND NEW.status = 'running'
                    AND NEW.max_epochs > OLD.epochs_done)) THEN
            RAISE EXCEPTION 'config %: cannot change status from % to %', OLD.config_id, OLD.status, NEW.status
                USING HINT = 'allowed: pending/running -> stopped; stopped -> running; '
                             'completed -> running; failed -> running (retries from the last committed hop); '
                             'resuming needs max_epochs above the epochs done '
                             '(UPDATE configs SET max_epochs = ..., status = ''running'')',
                      ERRCODE = 'invalid_parameter_value';
        END IF;
        NEW.error := NULL;
    END IF;
    IF NEW.status IN ('pending', 'running') AND NEW.epochs_done >= NEW.max_epochs THEN
        NEW.status := 'completed';
        NEW.event_kind := 'completed';
        NEW.event_detail := format('max_epochs lowered to the %s epochs done: nothing left to train', NEW.epochs_done);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_guard
BEFORE UPDATE ON configs FOR EACH ROW EXECUTE FUNCTION configs_guard();

-- Every status change is logged (what, who, why: stamped in the row by the BEFORE triggers); a resumed config
-- reopens its workload (without resuming the workload's other configs), and a user's change
-- that leaves a config unable to run may finish its workload (the system's own changes call
-- finish_workload themselves, after the procedure's hook: taking the workload's row lock here,
-- mid-unit, would invert the lock order with a user's stop). SECURITY DEFINER: users read the
-- log but cannot write it, and finishing must see every config of the workload.
CREATE OR REPLACE FUNCTION configs_after_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO config_events (config_id, kind, epochs_done, detail, actor)
        VALUES (NEW.config_id, NEW.event_kind, NEW.epochs_done, NEW.event_detail, NEW.event_actor);
    END IF;
    IF NEW.status IN ('pending', 'running') THEN
        PERFORM set_config('cerebro.internal', 'on', true);
        UPDATE workloads w SET status = 'running'
        WHERE w.workload_id = NEW.workload_id AND w.status <> 'running';
        PERFORM set_config('cerebro.internal', was_internal, true);
    ELSIF TG_OP = 'UPDATE' AND OLD.status IN ('pending', 'running') AND was_internal <> 'on' THEN
        -- (A user who sets cerebro.internal only skips this; settle_unrunnable_configs finishes it.)
        PERFORM set_config('cerebro.internal', 'on', true);
        PERFORM finish_workload(NEW.workload_id);
        PERFORM set_config('cerebro.internal', was_internal, true);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER configs_after_change
AFTER INSERT OR UPDATE ON configs FOR EACH ROW EXECUTE FUNCTION configs_after_change();

-- A user's configs pending or running, across all their workloads, stay within their
-- max_active_configs: checked once per statement that adds or resumes configs (INSERT,
-- add_config, run_model_selection, resuming a config or a workload). The system's own
-- statements are not refused here: clone_config checks itself, hyperopt suggests only
-- within the headroom, and the scheduler's updates never add configs in flight.
CREATE OR REPLACE FUNCTION configs_check_quota() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    owner text;
BEGIN
    IF is_internal() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        FOR owner IN
            SELECT DISTINCT w.owner FROM added a JOIN workloads w USING (workload_id)
            WHERE a.status IN ('pending', 'running') ORDER BY 1  -- one lock order: no deadlocks
        LOOP
            PERFORM check_active_configs(owner);
        END LOOP;
    ELSE
        FOR owner IN
            SELECT DISTINCT w.owner
            FROM added a JOIN removed r USING (config_id) JOIN workloads w ON w.workload_id = a.workload_id
            WHERE a.status IN ('pending', 'running') AND r.status NOT IN ('pending', 'running') ORDER BY 1
        LOOP
            PERFORM check_active_configs(owner);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER configs_check_quota_insert
AFTER INSERT ON configs REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION configs_check_quota();

CREATE OR REPLACE TRIGGER configs_check_quota_update
AFTER UPDATE ON configs REFERENCING OLD TABLE AS removed NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION configs_check_quota();

-- A workload's unit_timeout stays within statement_timeout's range and the owner's limits (NULL:
-- the owner's default), and so does its max_epochs; users may set its status to 'stopped' /
-- 'running', which (workloads_after_status) stops / resumes its unfinished configs.
CREATE OR REPLACE FUNCTION workloads_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF NEW.unit_timeout <= interval '0' OR NEW.unit_timeout > interval '24 days' THEN
        RAISE EXCEPTION 'unit_timeout must be positive and at most 24 days, got %', NEW.unit_timeout
            USING HINT = 'NULL means the default (cerebro.limits.default_unit_timeout)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.unit_timeout IS DISTINCT FROM OLD.unit_timeout THEN
        NEW.unit_timeout := bounded_unit_timeout(NEW.owner, NEW.unit_timeout);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.max_epochs > OLD.max_epochs THEN
        PERFORM check_max_epochs(NEW.owner, NEW.max_epochs);
    END IF;
    IF TG_OP = 'UPDATE' AND NOT is_internal() AND NEW.status IS DISTINCT FROM OLD.status
       AND NEW.status NOT IN ('stopped', 'running') THEN
        RAISE EXCEPTION 'workload %: cannot change status from % to %', OLD.workload_id, OLD.status, NEW.status
            USING HINT = 'allowed: stopped (stops its unfinished configs), running (resumes its stopped ones)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER workloads_guard
BEFORE INSERT OR UPDATE ON workloads FOR EACH ROW EXECUTE FUNCTION workloads_guard();

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
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
    stuck record;
    settled int := 0;
BEGIN
    FOR stuck IN SELECT * FROM unrunnable_configs() ORDER BY config_id LOOP
        IF stuck.outcome = 'failed' THEN
            PERFORM fail_config(stuck.config_id, stuck.reason);
        ELSE
            PERFORM set_config('cerebro.internal', 'on', true);
            -- Re-checked on the row's latest version: a user may have raised max_epochs meanwhile.
            UPDATE configs c SET status = 'completed', event_detail = stuck.reason
            WHERE c.config_id = stuck.config_id AND c.status IN ('pending', 'running')
              AND c.epochs_done >= c.max_epochs;
            PERFORM finish_workload(stuck.workload_id);
        END IF;
        settled := settled + 1;
    END LOOP;
    -- Workloads whose configs all stopped or finished without a finish_workload call.
    PERFORM set_config('cerebro.internal', 'on', true);
    PERFORM finish_workload(w.workload_id)
    FROM workloads w
    WHERE w.status = 'running'
      AND NOT EXISTS (SELECT 1 FROM configs c WHERE c.workload_id = w.workload_id AND c.status IN ('pending', 'running'));
    PERFORM set_config('cerebro.internal', was_internal, true);
    RETURN settled;
END
$$;
