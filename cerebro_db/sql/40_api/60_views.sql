-- Every view runs with its reader's rights (security_invoker), so row-level security
-- shows each user only their own rows.

-- The params a workload searched (its search space's keys) of one of its configs: what tells its configs apart.
CREATE OR REPLACE FUNCTION searched_params(params jsonb, search_space jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT jsonb_object_agg(k, params -> k) FROM jsonb_object_keys(search_space) k $$;

-- leaderboard: per config, its best validation metric so far (live: epochs commit as they end).
CREATE OR REPLACE VIEW leaderboard WITH (security_invoker = true) AS
SELECT c.workload_id,
       rank() OVER (PARTITION BY c.workload_id ORDER BY best.val_metric DESC NULLS LAST) AS rank,
       c.config_id,
       c.params,
       c.status,
       c.epochs_done,
       c.max_epochs,
       best.val_metric AS best_val_metric,
       best.val_loss AS best_val_loss,
       best.epoch AS best_epoch,
       last.train_loss AS last_train_loss,
       last.val_loss AS last_val_loss
FROM configs c
LEFT JOIN LATERAL (SELECT m.epoch, m.val_metric, m.val_loss FROM epoch_metrics m
                   WHERE m.config_id = c.config_id ORDER BY m.val_metric DESC, m.epoch LIMIT 1) best ON true
LEFT JOIN LATERAL (SELECT m.train_loss, m.val_loss FROM epoch_metrics m
                   WHERE m.config_id = c.config_id ORDER BY m.epoch DESC LIMIT 1) last ON true
ORDER BY c.workload_id, rank, c.config_id;

-- roster: the built-in models and their hyper-parameters (defaults and legal values).
CREATE OR REPLACE FUNCTION roster_params() RETURNS TABLE (
    model text, model_doc text, param text, type text, default_value text, allowed text, param_doc text)
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.roster_table()
$$;

CREATE OR REPLACE VIEW roster WITH (security_invoker = true) AS SELECT * FROM roster_params();

-- Per workload: configs by status, epochs done / planned, throughput and a naive ETA
-- (remaining config-epochs at the recent pace, over the segments the workload gets).
CREATE OR REPLACE VIEW workload_progress WITH (security_invoker = true) AS
SELECT w.workload_id,
       w.name,
       w.owner,
       w.model,
       w.procedure,
       w.status,
       count(c.*) AS configs,
       count(c.*) FILTER (WHERE c.status IN ('pending', 'running')) AS configs_active,
       count(c.*) FILTER (WHERE c.status = 'stopped') AS configs_stopped,
       count(c.*) FILTER (WHERE c.status = 'completed') AS configs_completed,
       count(c.*) FILTER (WHERE c.status = 'failed') AS configs_failed,
       coalesce(sum(c.epochs_done), 0) AS epochs_done,
       coalesce(sum(c.max_epochs) FILTER (WHERE c.status IN ('pending', 'running')), 0)
           - coalesce(sum(c.epochs_done) FILTER (WHERE c.status IN ('pending', 'running')), 0) AS epochs_left,
       max(l.best_val_metric) AS best_val_metric,
       pace.seconds_per_epoch,
       CASE WHEN pace.seconds_per_epoch IS NOT NULL THEN
           make_interval(secs => pace.seconds_per_epoch
               * (coalesce(sum(c.max_epochs - c.epochs_done) FILTER (WHERE c.status IN ('pending', 'running')), 0))
               / greatest(1, least((SELECT count(*) FROM segments),
                                   count(c.*) FILTER (WHERE c.status IN ('pending', 'running')))))
       END AS eta
FROM workloads w
LEFT JOIN configs c USING (workload_id)
LEFT JOIN leaderboard l USING (config_id)
LEFT JOIN LATERAL (SELECT avg(m.seconds) AS seconds_per_epoch
                   FROM (SELECT m.seconds FROM epoch_metrics m JOIN configs c2 USING (config_id)
                         WHERE c2.workload_id = w.workload_id ORDER BY m.finished_at DESC LIMIT 10) m) pace ON true
GROUP BY w.workload_id, pace.seconds_per_epoch
ORDER BY w.workload_id;

-- What each segment runs right now.
CREATE OR REPLACE VIEW segment_activity WITH (security_invoker = true) AS
SELECT s.segment,
       a.workload_id,
       a.config_id,
       c.epochs_done + 1 AS epoch,
       a.started_at,
       now() - a.started_at AS running_for,
       a.pid
FROM segments s
LEFT JOIN active_units a ON a.segment = s.segment
LEFT JOIN configs c ON c.config_id = a.config_id
ORDER BY s.segment;

-- Where each config comes from: a workload's own search ('new'), a clone within the
-- workload, or a warm start from a parent workload's config (drill-down).
CREATE OR REPLACE VIEW workload_lineage WITH (security_invoker = true) AS
SELECT w.workload_id,
       w.name,
       w.parent_workload_id,
       c.config_id,
       c.cloned_from,
       source.workload_id AS cloned_from_workload,
       CASE WHEN c.cloned_from IS NULL THEN 'new'
            WHEN source.workload_id = c.workload_id THEN 'clone'
            ELSE 'warm start' END AS origin
FROM workloads w
JOIN configs c USING (workload_id)
LEFT JOIN configs source ON source.config_id = c.cloned_from
ORDER BY w.workload_id, c.config_id;
