-- The status machine: every status change of a config or a workload.

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
    SELECT set_config('cerebro.internal', 'on', true);
    UPDATE configs c SET status = 'failed', error = fail_config.error, event_detail = fail_config.error,
                         updated_at = now()
    WHERE c.config_id = fail_config.config_id AND c.status IN ('pending', 'running');
    SELECT finish_workload(c.workload_id) FROM configs c WHERE c.config_id = fail_config.config_id;
$$;

-- A committed hop advances the config: its epochs done, and pending -> running, or -> completed
-- once its last epoch is done. A user may have stopped the config while the unit trained: their
-- status stays, unless this hop finished the config's last epoch (then nothing is left to resume).
CREATE OR REPLACE FUNCTION config_hop_committed(config_id int, epochs_done int) RETURNS void
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$
    SELECT set_config('cerebro.internal', 'on', true);
    UPDATE configs c SET
        epochs_done = config_hop_committed.epochs_done,
        status = CASE WHEN c.status IN ('pending', 'running', 'stopped') AND config_hop_committed.epochs_done >= c.max_epochs
                      THEN 'completed'
                      WHEN c.status = 'pending' THEN 'running'
                      ELSE c.status END,
        updated_at = now()
    WHERE c.config_id = config_hop_committed.config_id;
$$;
