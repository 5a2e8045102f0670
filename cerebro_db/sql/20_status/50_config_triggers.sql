-- The checks on configs and workloads other than their status (10_status_machine.sql has that):
-- params, limits, the memory guard, and which columns a user may change at all.
-- The system's own writes (cerebro.internal = on, see is_internal()) check their limits themselves.

CREATE OR REPLACE FUNCTION _complete_params(model text, params jsonb, feature_shape int[], registered boolean)
RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.complete_params(model, params, feature_shape, registered)
$$;

-- A new config of workload_id: params are validated against the workload's model and completed
-- with defaults (params_out); max_epochs comes from the workload when NULL (max_epochs_out), within
-- the owner's limit (the system's own inserts, clone_config and procedures, check their limits
-- themselves). The memory guard (45_memory_guard.sql): user inserts and clones are refused here;
-- configs a procedure suggests during a hop are left to their first unit (refusing would undo the hop).
-- configs_before_insert runs it on every INSERT; add_config also before its INSERT, which takes a
-- config_id even if a BEFORE trigger then refuses the row.
CREATE OR REPLACE FUNCTION check_new_config(workload_id int, params jsonb, max_epochs int, cloned boolean,
                                            OUT params_out jsonb, OUT max_epochs_out int)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    workload record;
BEGIN
    SELECT w.model, w.max_epochs, w.owner, d.feature_shape INTO workload
    FROM workloads w JOIN datasets d ON d.name = w.dataset WHERE w.workload_id = check_new_config.workload_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown workload %', check_new_config.workload_id USING ERRCODE = 'undefined_object';
    END IF;
    max_epochs_out := coalesce(check_new_config.max_epochs, workload.max_epochs);
    IF NOT is_internal() THEN
        PERFORM check_max_epochs(workload.owner, max_epochs_out);
    END IF;
    params_out := raise_if_error(_complete_params(workload.model, check_new_config.params, workload.feature_shape,
                                                  is_registered_model(workload.model)));
    IF NOT is_internal() OR cloned THEN
        PERFORM raise_if_error(_check_training_memory(check_new_config.workload_id, params_out));
    END IF;
END
$$;

-- INSERT INTO configs (workload_id, params): checked and completed by check_new_config.
CREATE OR REPLACE FUNCTION configs_before_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    checked record;
BEGIN
    checked := check_new_config(NEW.workload_id, NEW.params, NEW.max_epochs, NEW.cloned_from IS NOT NULL);
    NEW.params := checked.params_out;
    NEW.max_epochs := checked.max_epochs_out;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_before_insert
BEFORE INSERT ON configs FOR EACH ROW EXECUTE FUNCTION configs_before_insert();

-- A user may change a config's status (checked next, by configs_status) and its max_epochs: not
-- below the epochs done, and within the owner's limit.
CREATE OR REPLACE FUNCTION configs_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
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
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_guard
BEFORE UPDATE ON configs FOR EACH ROW EXECUTE FUNCTION configs_guard();

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
-- the owner's default), and so does its max_epochs (its status: workloads_status).
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
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER workloads_guard
BEFORE INSERT OR UPDATE ON workloads FOR EACH ROW EXECUTE FUNCTION workloads_guard();
