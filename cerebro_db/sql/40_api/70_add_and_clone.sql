-- Human-in-the-loop additions to a running workload.
--   SELECT add_config(1, '{"lr": 0.02}');
--   SELECT clone_config(3, '{"lr": 0.0005}');     -- continues from 3's trained weights and optimizer state

-- Checked before the INSERT, so that a refused config takes no config_id (the INSERT's triggers
-- check it again; the memory guard's estimate is cached by then).
CREATE OR REPLACE FUNCTION add_config(workload_id int, params jsonb) RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    new_id int;
BEGIN
    PERFORM check_new_config(add_config.workload_id, add_config.params, NULL, false);
    IF NOT is_internal() THEN  -- as configs_check_quota: the system's own inserts are not counted
        PERFORM check_room_for_a_config(w.owner) FROM workloads w WHERE w.workload_id = add_config.workload_id;
    END IF;
    INSERT INTO configs (workload_id, params) VALUES (add_config.workload_id, add_config.params)
    RETURNING config_id INTO new_id;
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION _clone_params(
    model text, params jsonb, overrides jsonb, feature_shape int[], registered boolean
) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.clone_params(model, params, overrides, feature_shape, registered)
$$;

-- The clone starts where its source's last committed hop left it (same epoch, same
-- segments still to visit), as a new config of the same workload; the source is untouched.
-- overrides: lr, batch_size (and other keys that keep the architecture), max_epochs (required
-- when the source has finished its epochs: the clone must have some left).
-- SECURITY DEFINER: it copies model_states, which users cannot touch, so it checks itself
-- that the caller owns the source. created_by: the caller, 'cerebro' for the system (autonomy's clones
-- are not the user's: 95_autonomy.sql tells them apart).
CREATE OR REPLACE FUNCTION clone_config(config_id int, overrides jsonb DEFAULT '{}') RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    source record;
    new_params jsonb;
    clone_id int;
    staged text;  -- the clone's name of its source's state file, until it has its own config id
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
BEGIN
    -- One statement reads config progress and state together: a unit committing
    -- meanwhile cannot tear them apart. The clone takes its own name of that state's file at once
    -- (30_state_files.sql); if a hop superseded it and it was swept in between, read again.
    LOOP
        SELECT c.workload_id, c.params, c.epochs_done, c.max_epochs, c.seed, w.model, w.max_epochs AS workload_epochs,
               w.owner, d.feature_shape, s.state_file, s.state_bytes, s.visited_segments, s.epoch_rows,
               s.epoch_loss_sum, s.epoch_metric_sum, s.epoch_seconds
        INTO source
        FROM configs c
        JOIN workloads w USING (workload_id)
        JOIN datasets d ON d.name = w.dataset
        LEFT JOIN model_states s USING (config_id)
        WHERE c.config_id = clone_config.config_id AND caller_owns(w.owner);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown config %', clone_config.config_id USING ERRCODE = 'undefined_object';
        END IF;
        EXIT WHEN source.state_file IS NULL;
        staged := state_file_linked(clone_config.config_id, source.state_file);
        EXIT WHEN staged IS NOT NULL;
    END LOOP;
    IF overrides IS NULL OR jsonb_typeof(overrides) <> 'object' THEN
        RAISE EXCEPTION 'overrides must be a JSON object, got %', coalesce(overrides::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A clone starts at its source's epochs_done: it needs epochs left, or it could never train.
    IF overrides ? 'max_epochs' AND (jsonb_typeof(overrides -> 'max_epochs') <> 'number'
                                     OR (overrides ->> 'max_epochs')::numeric < source.epochs_done + 1) THEN
        RAISE EXCEPTION 'clone max_epochs must be a number >= %, got %', source.epochs_done + 1,
            overrides -> 'max_epochs'
            USING HINT = format('the clone continues from the %s epochs config %s has trained', source.epochs_done,
                                clone_config.config_id),
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Params first: the hint below must name a call that works.
    new_params := raise_if_error(_clone_params(source.model, source.params, overrides - 'max_epochs',
                                               source.feature_shape, is_registered_model(source.model)));
    IF NOT overrides ? 'max_epochs' AND source.epochs_done >= source.max_epochs THEN
        RAISE EXCEPTION 'config % has finished its % epochs; a clone would start with none left to train',
            clone_config.config_id, source.epochs_done
            USING HINT = format('pass max_epochs, e.g. clone_config(%s, %L)', clone_config.config_id,
                                overrides || jsonb_build_object('max_epochs',
                                                                source.epochs_done + source.workload_epochs)),
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF overrides ? 'max_epochs' THEN
        PERFORM check_max_epochs(source.owner, (overrides ->> 'max_epochs')::int);
    END IF;
    -- The INSERT's memory guard and the quota check after it, asked first: a refused clone takes no config_id.
    PERFORM raise_if_error(_check_training_memory(source.workload_id, new_params));
    PERFORM check_room_for_a_config(source.owner);

    PERFORM set_config('cerebro.internal', 'on', true);
    INSERT INTO configs (workload_id, params, status, epochs_done, max_epochs, seed, cloned_from, created_by,
                         event_detail)
    VALUES (source.workload_id,
            new_params, 'pending', source.epochs_done,
            coalesce((overrides ->> 'max_epochs')::int, source.max_epochs), source.seed, clone_config.config_id,
            caller_actor(), format('clone of config %s', clone_config.config_id))
    RETURNING configs.config_id INTO clone_id;
    PERFORM check_active_configs(source.owner);  -- the insert ran as the system: the quota trigger let it be
    IF staged IS NOT NULL THEN
        INSERT INTO model_states (config_id, state_file, state_bytes, visited_segments, epoch_rows, epoch_loss_sum,
                                  epoch_metric_sum, epoch_seconds)
        VALUES (clone_id, state_file_renamed(staged, clone_id), source.state_bytes, source.visited_segments,
                source.epoch_rows, source.epoch_loss_sum, source.epoch_metric_sum, source.epoch_seconds);
    END IF;
    PERFORM set_config('cerebro.internal', was_internal, true);
    RETURN clone_id;
END
$$;
