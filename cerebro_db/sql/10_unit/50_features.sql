-- Feature transfer (plpy/cerebro_plpy/features.py): a transfer config whose base is frozen (trainable_from = '')
-- trains its head on the base's outputs at its layer, materialized once per shard instead of computed at every step.
-- A unit materializes what it will read and is not stored yet, in its own transaction, on the server that holds the
-- shard, before train_hop (run_unit; the multi-server backend calls materialize_features on the segment server):
--   unit_context -> materialize_features(context) -> train_hop -> record_hop
-- Lazily, by the first unit that needs a piece, rather than by a job of its own: the claim stays the one rule of
-- what runs where, the unit already holds its segment (one unit per segment at a time), and a piece commits whole
-- with the hop that made it (a failed unit rolls it back; the next one makes it again). The lock per piece keeps two
-- units (on a server holding several segments, or the epoch's last hop reading every validation slice) from
-- computing the same piece twice. The first unit on a segment pays for the pass, within its unit_timeout.

-- cerebro.feature_transfer (the scheduler's setting, as cerebro.max_training_mb): 'on' (the default); 'unstaged', a
-- pass per layer rather than one for all the workload's layers; 'off', frozen bases run at every step. The last two
-- are the baselines of bench/feature_transfer.py.
CREATE OR REPLACE FUNCTION feature_transfer_mode() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    mode text := coalesce(nullif(current_setting('cerebro.feature_transfer', true), ''), 'on');
BEGIN
    IF mode NOT IN ('on', 'unstaged', 'off') THEN
        RAISE EXCEPTION 'cerebro.feature_transfer must be on, unstaged or off, not %', quote_literal(mode)
            USING HINT = 'ALTER DATABASE ... SET cerebro.feature_transfer = ''on''', ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN mode;
END
$$;

-- The layers a pass computes for a unit of config_id: every layer its workload's frozen configs of the same base
-- that may still train read off it (so they share one pass per shard), its own included.
CREATE OR REPLACE FUNCTION feature_layers(config_id int) RETURNS text[]
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT array_agg(DISTINCT o.params ->> 'layer' ORDER BY o.params ->> 'layer')
    FROM configs c
    JOIN configs o ON o.workload_id = c.workload_id AND o.params ->> 'base' = c.params ->> 'base'
    WHERE c.config_id = feature_layers.config_id AND o.params ->> 'trainable_from' = ''
      AND (o.status IN ('pending', 'running') OR o.config_id = c.config_id)
$$;

CREATE OR REPLACE FUNCTION lock_feature_piece(dataset_id int, base_sha256 text, split text, segment int) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    SELECT pg_advisory_xact_lock(features_lock_key(), hashtext(format('%s/%s/%s/%s', dataset_id, base_sha256, split,
                                                                      segment)))
$$;

-- The feature set of (owner, dataset, base, layer), made if new.
CREATE OR REPLACE FUNCTION feature_set(owner text, dataset_id int, base_name text, base_sha256 text, layer text,
                                       feature_shape int[]) RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    found int;
BEGIN
    INSERT INTO feature_sets AS s (owner, dataset_id, base_name, base_sha256, layer, feature_shape)
    VALUES (owner, dataset_id, base_name, base_sha256, layer, feature_shape)
    ON CONFLICT ON CONSTRAINT feature_sets_owner_key DO NOTHING
    RETURNING s.feature_set_id INTO found;
    IF found IS NULL THEN
        SELECT s.feature_set_id INTO found FROM feature_sets s
        WHERE s.owner = owner AND s.dataset_id = dataset_id AND s.base_sha256 = base_sha256 AND s.layer = layer;
    END IF;
    RETURN found;
END
$$;

CREATE OR REPLACE FUNCTION store_feature_buffer(feature_set_id int, split text, segment int, part int, rows int,
                                                x bytea, y bytea) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    INSERT INTO feature_buffers (feature_set_id, split, segment, part, rows, x, y)
    VALUES (feature_set_id, split, segment, part, rows, x, y)
$$;

CREATE OR REPLACE FUNCTION log_feature_pass(owner text, dataset_id int, base_sha256 text, layers text[], split text,
                                            segment int, rows int, batches int, batch_rows int, bytes bigint,
                                            seconds float8) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    INSERT INTO feature_passes (owner, dataset_id, base_sha256, layers, split, segment, rows, batches, batch_rows,
                                bytes, seconds, backend_pid)
    VALUES (owner, dataset_id, base_sha256, layers, split, segment, rows, batches, batch_rows, bytes, seconds,
            pg_backend_pid())
$$;

CREATE OR REPLACE FUNCTION _materialize_features(context jsonb) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.materialize_features(plpy, GD, context)
$$;

-- What the unit of context (unit_context's) will read and is not stored yet, materialized here: {"passes": n, ...}.
-- Nothing for a config that trains through its base.
CREATE OR REPLACE FUNCTION materialize_features(context jsonb) RETURNS jsonb
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$ SELECT raise_if_error(_materialize_features(context)) $$;
