-- run_unit: train a claimed config for one pass over this segment's shard and commit the
-- hop (state, progress, unit log, and at an epoch's end its validation metrics).
-- The scheduler runs, per segment:  BEGIN; SELECT * FROM claim_unit(s); SELECT run_unit(c, s); COMMIT;

CREATE OR REPLACE FUNCTION _run_unit(config_id int, segment int) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.run_unit(plpy, GD, config_id, segment)
$$;

CREATE OR REPLACE FUNCTION run_unit(config_id int, segment int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    RETURN raise_if_error(_run_unit(config_id, segment));
END
$$;

-- A workload is completed once none of its configs can take another unit. Two segments
-- may finish its last two configs at the same moment, each still seeing the other's config
-- running: the row lock serializes them, and the UPDATE, a new statement, then sees the
-- other's committed config.
CREATE OR REPLACE FUNCTION finish_workload(workload_id int) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    SELECT 1 FROM workloads w WHERE w.workload_id = finish_workload.workload_id FOR NO KEY UPDATE;
    UPDATE workloads w SET status = 'completed'
    WHERE w.workload_id = finish_workload.workload_id AND w.status = 'running'
      AND NOT EXISTS (SELECT 1 FROM configs c
                      WHERE c.workload_id = w.workload_id AND c.status IN ('pending', 'running'));
$$;

-- A config whose unit failed for a reason of its own (divergence, bad model) stops
-- taking units; the message stays in configs.error.
CREATE OR REPLACE FUNCTION fail_config(config_id int, error text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    SELECT set_config('cerebro.internal', 'on', true), set_config('cerebro.reason', fail_config.error, true);
    UPDATE configs c SET status = 'failed', error = fail_config.error, updated_at = now()
    WHERE c.config_id = fail_config.config_id AND c.status IN ('pending', 'running');
    SELECT finish_workload(c.workload_id) FROM configs c WHERE c.config_id = fail_config.config_id;
$$;
