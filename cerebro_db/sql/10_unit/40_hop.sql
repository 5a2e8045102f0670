-- A unit trains one config for one pass over the shard a segment holds and commits the hop: SQL decides
-- and records, Python only trains. In the transaction that claimed it (claim_unit, 10_claim.sql):
--   unit_context(config, segment)  -> context, state        what the unit trains, and from which state
--   train_hop(context, state)      -> summary, new_state    where the shard is; writes nothing
--                                                            (cerebro_plpy.unit.train_hop)
--   record_hop(config, segment, summary, new_state)         state, progress, unit log, epoch metrics
-- Backends differ only in where train_hop runs (cerebro_db/backends): on a segment server, or as a
-- Greenplum aggregate; the local backend's run_unit trains on the coordinator itself, from the config's
-- state file to its new one (30_state_files.sql), and records with record_stored_hop. The claim's
-- transaction holds the config's lock throughout, so a hop commits whole or not at all.

-- The unit in hand: this transaction claimed the config (claim_unit) and the segment is one its
-- config may still visit this epoch (unit_fits, the one fits rule). Nothing else: the claim
-- checked that the unit was legal (unit_is_legal) when it started, and a unit in flight when its
-- user stops the config (or its workload) still commits: the hop is trained and correct, the
-- user's status stays (config_hop_committed), and resuming goes on from it.
CREATE OR REPLACE FUNCTION check_unit_in_hand(config_id int, segment int) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM configs c WHERE c.config_id = check_unit_in_hand.config_id) THEN
        RAISE EXCEPTION 'config % does not exist', config_id
            USING HINT = 'units are claimed and run by the scheduler (cerebro-db scheduler)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT unit_claimed(config_id) THEN
        RAISE EXCEPTION 'config % is not claimed by this transaction; call claim_unit(%) first', config_id, segment
            USING HINT = 'units are claimed and run by the scheduler (cerebro-db scheduler), in one transaction: '
                         'claim_unit, then unit_context, train_hop and record_hop',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT unit_fits(config_id, segment) THEN
        RAISE EXCEPTION 'config % may not run on segment %: it visited its shard this epoch already', config_id,
                        segment
            USING HINT = 'a config visits each shard of its dataset once per epoch; claim_unit gives a segment '
                         'it may visit',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- What the claimed unit trains (model, params, dataset, epoch, ...), as JSON for wherever it
-- trains. The unit starts here: record_hop logs its time from now.
CREATE OR REPLACE FUNCTION unit_start(config_id int, segment int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    context jsonb;
BEGIN
    PERFORM check_unit_in_hand(config_id, segment);
    -- Transaction-local: a session that ran an earlier unit has it reset to '' at that one's end.
    PERFORM set_config('cerebro.unit_started', clock_timestamp()::text, true);
    SELECT jsonb_build_object(
               'config_id', c.config_id, 'segment', unit_start.segment, 'params', c.params::text,
               'shard', segment_shard(unit_start.segment, d.num_segments, d.replication),
               'seed', c.seed, 'epoch', c.epochs_done + 1, 'model', w.model, 'dataset_id', d.dataset_id,
               'feature_shape', d.feature_shape, 'num_classes', d.num_classes, 'num_segments', d.num_segments,
               'validation_rows', d.validation_rows, 'source', r.source, 'entry_point', r.entry_point,
               'base_sha256', c.base_sha256,  -- a transfer config's base (97_transfer.sql), read by its digest
               -- feature transfer (50_features.sql): whose features, and the layers one pass computes
               'owner', w.owner, 'feature_layers', CASE WHEN w.model = 'transfer' THEN feature_layers(c.config_id) END,
               'feature_transfer', CASE WHEN w.model = 'transfer' THEN feature_transfer_mode() END,
               'epoch_done', cardinality(coalesce(s.visited_segments, '{}')) + 1 = d.num_segments / d.replication,
               -- The scheduler's setting: a user's own SET only reaches the check at launch.
               'max_training_mb', training_memory_limit())
    INTO context
    FROM configs c
    JOIN workloads w ON w.workload_id = c.workload_id
    JOIN datasets d ON d.name = w.dataset
    LEFT JOIN model_states s ON s.config_id = c.config_id
    LEFT JOIN registered_models r ON r.name = w.model
    WHERE c.config_id = unit_start.config_id;
    IF NOT FOUND THEN  -- its workload's dataset went meanwhile
        RAISE EXCEPTION 'config % has no dataset to train on', config_id
            USING HINT = 'SELECT * FROM unrunnable_configs() lists configs that can never train, and why',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM check_transfer_base(config_id);  -- the base it was created on, or none
    PERFORM sweep_state_files();  -- the states earlier hops superseded, before this one writes another
    RETURN context;
END
$$;

-- unit_start's context, and the config's state (NULL before its first hop): what a unit that trains
-- elsewhere (a segment server, a Greenplum segment) is handed.
CREATE OR REPLACE FUNCTION unit_context(config_id int, segment int, OUT context jsonb, OUT state bytea)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    context := unit_start(config_id, segment);
    state := stored_state(config_id);
END
$$;

CREATE OR REPLACE FUNCTION _train_hop(context jsonb, state bytea, OUT outcome jsonb, OUT new_state bytea)
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.train_hop(plpy, GD, context, state)
$$;

-- One pass over this server's shard of the context's segment (and, on the epoch's last hop, an
-- evaluation on the validation set); writes nothing. Assignments, not FROM: a function in FROM
-- would copy the state through a tuplestore (to disk beyond work_mem).
CREATE OR REPLACE FUNCTION train_hop(context jsonb, state bytea, OUT summary jsonb, OUT new_state bytea)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    trained record := _train_hop(context, state);
BEGIN
    summary := raise_if_error(trained.outcome);
    new_state := trained.new_state;
END
$$;

-- Commit the hop train_hop made, in the transaction that claimed it and ran unit_context: its state
-- stored as this transaction's state file, then record_stored_hop. The state is a parameter of hundreds
-- of MB for big models: a custom plan would copy it into the plan (generic plans take it by reference).
CREATE OR REPLACE FUNCTION record_hop(config_id int, segment int, summary jsonb, state bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    name text := new_state_file(config_id);
BEGIN
    PERFORM check_unit_in_hand(config_id, segment);  -- before anything is written
    IF state IS NULL THEN
        RAISE EXCEPTION 'record_hop of config % needs the new state train_hop returned', config_id
            USING HINT = 'record_hop takes the summary and state train_hop returned',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM _write_state_file(state_directory(), name, state);
    RETURN record_stored_hop(config_id, segment, summary || jsonb_build_object('state_bytes', octet_length(state)),
                             name);
END
$$;

-- Commit a hop whose new state is this transaction's state file state_file (summary.state_bytes its size):
-- on the epoch's last hop its metrics, the state's name and the epoch's running sums, the
-- unit log, then the config's progress and status, the workload's procedure (on_epoch_end) and
-- whether the workload is finished. The configs row is updated late, so its row lock (which a
-- user's UPDATE of the config waits for) is held for milliseconds at commit, never while training.
-- Returns the unit's summary. The transaction commits synchronously (30_state_files.sql's trigger: the
-- superseded state file may be swept once it does).
CREATE OR REPLACE FUNCTION record_stored_hop(config_id int, segment int, summary jsonb, state_file text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    started timestamptz;
    progress record;
    epoch int;
    epoch_done boolean;
    rows int;
    epoch_rows bigint;
    loss_sum float8;
    metric_sum float8;
    seconds float8;
BEGIN
    -- This transaction's config updates are the system's (the status guard lets them through).
    PERFORM set_config('cerebro.internal', 'on', true);
    PERFORM check_unit_in_hand(config_id, segment);
    started := nullif(current_setting('cerebro.unit_started', true), '')::timestamptz;
    IF started IS NULL THEN
        RAISE EXCEPTION 'record_hop of config % needs unit_context first, in the same transaction', config_id
            USING HINT = 'units are claimed and run by the scheduler (cerebro-db scheduler), in one transaction: '
                         'claim_unit, then unit_context, train_hop and record_hop',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.epochs_done, c.workload_id, d.num_segments / d.replication AS shards,
           segment_shard(record_stored_hop.segment, d.num_segments, d.replication) AS shard,
           coalesce(s.visited_segments, '{}') AS visited,
           coalesce(s.epoch_rows, 0) AS epoch_rows, coalesce(s.epoch_loss_sum, 0) AS epoch_loss_sum,
           coalesce(s.epoch_metric_sum, 0) AS epoch_metric_sum, coalesce(s.epoch_seconds, 0) AS epoch_seconds
    INTO progress
    FROM configs c
    JOIN workloads w ON w.workload_id = c.workload_id
    JOIN datasets d ON d.name = w.dataset
    LEFT JOIN model_states s ON s.config_id = c.config_id
    WHERE c.config_id = record_stored_hop.config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'config % has no dataset to record a hop of', config_id
            USING HINT = 'SELECT * FROM unrunnable_configs() lists configs that can never train, and why',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(summary -> 'rows') IS DISTINCT FROM 'number' OR jsonb_typeof(summary -> 'train_loss') IS DISTINCT
       FROM 'number' OR jsonb_typeof(summary -> 'train_metric') IS DISTINCT FROM 'number'
       OR jsonb_typeof(summary -> 'state_bytes') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'the hop of config % came back without rows, train_loss, train_metric and state_bytes: %',
                        config_id, summary
            USING HINT = 'record_hop takes the summary train_hop returned', ERRCODE = 'invalid_parameter_value';
    END IF;
    rows := (summary ->> 'rows')::int;
    epoch := progress.epochs_done + 1;
    epoch_done := cardinality(progress.visited) + 1 = progress.shards;
    IF epoch_done AND jsonb_typeof(summary -> 'val_loss') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'the last hop of epoch % of config % came back without validation metrics', epoch, config_id
            USING HINT = 'train_hop evaluates on the validation set when its context says epoch_done',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    epoch_rows := progress.epoch_rows + rows;
    loss_sum := progress.epoch_loss_sum + (summary ->> 'train_loss')::float8 * rows;
    metric_sum := progress.epoch_metric_sum + (summary ->> 'train_metric')::float8 * rows;
    seconds := progress.epoch_seconds + extract(epoch FROM clock_timestamp() - started)::float8;

    IF epoch_done THEN
        INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds,
                                   finished_at)
        VALUES (record_stored_hop.config_id, epoch, loss_sum / epoch_rows, metric_sum / epoch_rows,
                (summary ->> 'val_loss')::float8, (summary ->> 'val_metric')::float8, seconds, clock_timestamp());
    END IF;
    -- The next epoch starts with empty sums.
    UPDATE model_states s SET
        state_file = record_stored_hop.state_file,
        state_bytes = (summary ->> 'state_bytes')::bigint,
        visited_segments = CASE WHEN epoch_done THEN '{}' ELSE progress.visited || progress.shard END,
        epoch_rows = CASE WHEN epoch_done THEN 0 ELSE progress.epoch_rows + rows END,
        epoch_loss_sum = CASE WHEN epoch_done THEN 0 ELSE loss_sum END,
        epoch_metric_sum = CASE WHEN epoch_done THEN 0 ELSE metric_sum END,
        epoch_seconds = CASE WHEN epoch_done THEN 0 ELSE seconds END,
        updated_at = now()
    WHERE s.config_id = record_stored_hop.config_id;
    IF NOT FOUND THEN  -- the config's first hop
        INSERT INTO model_states (config_id, state_file, state_bytes, visited_segments, epoch_rows, epoch_loss_sum,
                                  epoch_metric_sum, epoch_seconds, updated_at)
        VALUES (record_stored_hop.config_id, record_stored_hop.state_file, (summary ->> 'state_bytes')::bigint,
                CASE WHEN epoch_done THEN '{}' ELSE ARRAY[progress.shard] END,
                CASE WHEN epoch_done THEN 0 ELSE epoch_rows END,
                CASE WHEN epoch_done THEN 0 ELSE loss_sum END,
                CASE WHEN epoch_done THEN 0 ELSE metric_sum END,
                CASE WHEN epoch_done THEN 0 ELSE seconds END,
                now());
    END IF;
    INSERT INTO units (config_id, segment, epoch, started_at, finished_at, rows, train_loss, train_metric,
                       data_load_s, state_load_s, train_s, state_save_s, validation_s, backend_pid)
    VALUES (record_stored_hop.config_id, record_stored_hop.segment, epoch, started, clock_timestamp(), rows,
            (summary ->> 'train_loss')::float8, (summary ->> 'train_metric')::float8,
            (summary ->> 'data_load_s')::float8, (summary ->> 'state_load_s')::float8,
            (summary ->> 'train_s')::float8, (summary ->> 'state_save_s')::float8,
            (summary ->> 'validation_s')::float8, pg_backend_pid());

    PERFORM config_hop_committed(config_id, progress.epochs_done + epoch_done::int);
    IF epoch_done THEN  -- the workload's procedure observes the epoch (may prune or suggest configs)
        PERFORM on_epoch_end(config_id, epoch);
    END IF;
    PERFORM finish_workload(progress.workload_id);
    RETURN jsonb_build_object('config_id', config_id, 'segment', segment, 'epoch', epoch, 'epoch_done', epoch_done,
                              'rows', summary -> 'rows', 'train_loss', summary -> 'train_loss',
                              'train_metric', summary -> 'train_metric', 'data_load_s', summary -> 'data_load_s',
                              'state_load_s', summary -> 'state_load_s', 'train_s', summary -> 'train_s',
                              'state_save_s', summary -> 'state_save_s', 'validation_s', summary -> 'validation_s');
END
$$;

-- The local hop: from the state file state_file (NULL before the config's first hop) to the new file
-- new_state_file, in the state directory; returns the summary with the new file's size, state_bytes.
CREATE OR REPLACE FUNCTION _train_stored_hop(context jsonb, directory text, state_file text, new_state_file text)
RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.train_stored_hop(plpy, GD, context, directory, state_file, new_state_file)
$$;

-- The local backend's unit (cerebro_db/backends/local.py), and a unit by hand: unit_start, the hop from
-- the config's state file to this transaction's (no state-sized value passes through SQL), record_stored_hop.
-- It trains on this server's own shard of the segment (after materializing the features a frozen transfer
-- base's head reads, if they are not stored yet: 50_features.sql).
--   BEGIN; SELECT * FROM claim_unit(segment); SELECT run_unit(config_id, segment); COMMIT;
CREATE OR REPLACE FUNCTION run_unit(config_id int, segment int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    context jsonb := unit_start(config_id, segment);
    name text := new_state_file(config_id);
BEGIN
    PERFORM materialize_features(context);
    RETURN record_stored_hop(
        config_id, segment,
        raise_if_error(_train_stored_hop(context, state_directory(),
                                         (SELECT s.state_file FROM model_states s WHERE s.config_id = run_unit.config_id),
                                         name)),
        name);
END
$$;
