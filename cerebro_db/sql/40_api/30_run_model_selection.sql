-- run_model_selection: record a workload and the configs its procedure starts with;
-- returns the workload id at once (the scheduler trains it).
--   SELECT run_model_selection('fashion', 'cnn', '{"lr":[0.001,0.01],"batch_size":[64,256]}');
--   SELECT run_model_selection('fashion', 'cnn', '{"lr":[0.001,0.01]}', autonomy => 'autopilot',
--                              budget_epochs => 40);   -- the system accepts its suggestions (95_autonomy.sql)

-- registered: whether model names a registered script (is_registered_model, 90_register_model.sql).
CREATE OR REPLACE FUNCTION _expand_search_space(
    model text, search_space jsonb, procedure text, num_configs int, seed int, feature_shape int[], parallelism int,
    registered boolean
) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.expand_search_space(model, search_space, procedure, num_configs, seed, feature_shape, parallelism, registered)
$$;

CREATE OR REPLACE FUNCTION _architecture_key(model text, params jsonb, registered boolean) RETURNS text
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.architecture_key(model, params, registered)
$$;

CREATE OR REPLACE FUNCTION scheduler_alive() RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_locks l
                   WHERE l.locktype = 'advisory' AND l.granted AND l.classid = scheduler_lock_key()::oid
                     AND l.objid = 0 AND l.objsubid = 2
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
$$;

-- Drill-down: each new config starts from the latest state of the parent workload's best
-- config with the same architecture (its own lr and batch size apply from the first unit).
-- SECURITY DEFINER (it copies model_states): the caller must own both workloads.
CREATE OR REPLACE FUNCTION warm_start_configs(workload_id int, parent_workload int) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    started int;
    targets int[];
    sources int[];
    source record;
    staged text;
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
BEGIN
    IF (SELECT count(*) FROM workloads w WHERE w.workload_id IN (warm_start_configs.workload_id, parent_workload)
                                          AND caller_owns(w.owner)) <> 2 THEN
        RAISE EXCEPTION 'unknown workload % or %', warm_start_configs.workload_id, parent_workload
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM set_config('cerebro.internal', 'on', true);  -- lineage is the system's to write
    WITH parent AS (
        SELECT p.config_id, _architecture_key(w.model, p.params, is_registered_model(w.model)) AS arch,
               l.best_val_metric
        FROM configs p
        JOIN workloads w USING (workload_id)
        JOIN leaderboard l USING (config_id)
        WHERE p.workload_id = warm_start_configs.parent_workload
          AND EXISTS (SELECT 1 FROM model_states s WHERE s.config_id = p.config_id)
    ), chosen AS (
        SELECT c.config_id, best.config_id AS source
        FROM configs c
        JOIN workloads w USING (workload_id)
        CROSS JOIN LATERAL (SELECT parent.config_id FROM parent
                            WHERE parent.arch = _architecture_key(w.model, c.params, is_registered_model(w.model))
                            ORDER BY parent.best_val_metric DESC NULLS LAST LIMIT 1) best
        WHERE c.workload_id = warm_start_configs.workload_id
    )
    SELECT array_agg(chosen.config_id), array_agg(chosen.source) INTO targets, sources FROM chosen;
    started := 0;
    FOR i IN 1 .. coalesce(cardinality(targets), 0) LOOP
        -- Each takes its own name of its source's latest state file (30_state_files.sql): read again if a hop
        -- superseded it and a sweep removed it in between.
        LOOP
            SELECT s.state_file, s.state_bytes INTO source FROM model_states s WHERE s.config_id = sources[i];
            EXIT WHEN NOT FOUND;
            staged := state_file_linked(sources[i], source.state_file);
            CONTINUE WHEN staged IS NULL;
            INSERT INTO model_states (config_id, state_file, state_bytes)
            VALUES (targets[i], state_file_renamed(staged, targets[i]), source.state_bytes);
            UPDATE configs c SET cloned_from = sources[i] WHERE c.config_id = targets[i];
            started := started + 1;
            EXIT;
        END LOOP;
    END LOOP;
    PERFORM set_config('cerebro.internal', was_internal, true);
    RAISE NOTICE '% of the new configs start from the parent workload''s weights', started;
    RETURN started;
END
$$;

-- The workload row: SECURITY DEFINER (tenants have no INSERT on workloads), so it checks what
-- row-level security and the caller's grants checked before: the dataset and the parent
-- workload are the caller's, the model and search space expand. It stamps the owner before
-- the insert, so workloads_guard applies the caller's limits (and workloads_autonomy checks the
-- autonomy and budget). The system's drill-down (an accepted suggestion, 95_autonomy.sql) is the
-- parent's owner's. Returns the new workload and the params of the configs it starts with
-- (run_model_selection inserts them, as the caller).
CREATE OR REPLACE FUNCTION _create_workload(
    dataset text, model text, search_space jsonb, procedure text, max_epochs int, num_configs int, name text,
    parent_workload int, warm_start boolean, seed int, unit_timeout interval, autonomy text DEFAULT 'manual',
    budget_epochs int DEFAULT NULL, budget_seconds int DEFAULT NULL, OUT new_workload int, OUT config_params jsonb
)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    owner text := CASE WHEN caller_is_system() AND parent_workload IS NOT NULL
                       THEN (SELECT w.owner FROM workloads w WHERE w.workload_id = parent_workload)
                       ELSE owner_of_new_rows() END;
    shape int[];
    spread int;
BEGIN
    SELECT d.feature_shape, d.num_segments INTO shape, spread FROM datasets d
    WHERE d.name = dataset AND caller_owns(d.owner);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown dataset %', quote_nullable(dataset)
            USING HINT = 'prepare it with prepare_dataset(...); SELECT name FROM datasets lists them',
                  ERRCODE = 'undefined_object';
    END IF;
    -- After the segments changed (cerebro-db up --segments): no epoch of it could ever finish.
    IF spread > (SELECT count(*) FROM segments) THEN
        RAISE EXCEPTION 'dataset % is spread over % segments, but % are registered', dataset, spread,
                        (SELECT count(*) FROM segments)
            USING HINT = 'prepare it again for the segments there are (prepare_dataset under a new name)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_epochs IS NULL OR max_epochs < 1 THEN
        RAISE EXCEPTION 'max_epochs must be at least 1, got %', coalesce(max_epochs::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF parent_workload IS NOT NULL AND NOT EXISTS (SELECT 1 FROM workloads w
                                                   WHERE w.workload_id = parent_workload AND caller_owns(w.owner)) THEN
        RAISE EXCEPTION 'unknown parent_workload %', parent_workload USING ERRCODE = 'undefined_object';
    END IF;
    IF warm_start AND parent_workload IS NULL THEN
        RAISE EXCEPTION 'warm_start needs a parent_workload to start from'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    seed := coalesce(seed, floor(random() * seed_bound())::int);
    config_params := raise_if_error(_expand_search_space(model, search_space, procedure, num_configs, seed, shape,
                                                         (SELECT count(*)::int FROM segments),
                                                         is_registered_model(model)));
    INSERT INTO workloads (owner, name, dataset, model, search_space, procedure, max_epochs, num_configs, seed,
                           parent_workload_id, warm_start, unit_timeout, autonomy, budget_epochs, budget_seconds)
    VALUES (owner, name, dataset, model, search_space, procedure, max_epochs, num_configs, seed,
            parent_workload, warm_start, unit_timeout, autonomy, budget_epochs, budget_seconds)
    RETURNING workload_id INTO new_workload;
END
$$;

CREATE OR REPLACE FUNCTION run_model_selection(
    dataset text,
    model text,
    search_space jsonb,
    procedure text DEFAULT 'grid',
    max_epochs int DEFAULT 10,
    num_configs int DEFAULT NULL,
    name text DEFAULT NULL,
    parent_workload int DEFAULT NULL,
    warm_start boolean DEFAULT false,
    seed int DEFAULT NULL,
    unit_timeout interval DEFAULT NULL,
    autonomy text DEFAULT 'manual',
    budget_epochs int DEFAULT NULL,
    budget_seconds int DEFAULT NULL
) RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    created record;
BEGIN
    SELECT * INTO created FROM _create_workload(dataset, model, search_space, procedure, max_epochs, num_configs, name,
                                                parent_workload, warm_start, seed, unit_timeout, autonomy,
                                                budget_epochs, budget_seconds);
    -- Config k gets the k-th seed after the workload's: reproducible, distinct initial weights per config.
    INSERT INTO configs (workload_id, params, max_epochs, seed)
    SELECT created.new_workload, p.value, w.max_epochs, derived_seed(w.seed, p.k)
    FROM workloads w, jsonb_array_elements(created.config_params) WITH ORDINALITY AS p(value, k)
    WHERE w.workload_id = created.new_workload;

    IF warm_start THEN
        PERFORM warm_start_configs(created.new_workload, parent_workload);
    END IF;

    IF NOT scheduler_alive() THEN
        RAISE NOTICE 'workload % is queued, but no scheduler is running', created.new_workload
            USING HINT = 'start one with `cerebro-db scheduler` (or `cerebro-db up`)';
    END IF;
    RETURN created.new_workload;
END
$$;
