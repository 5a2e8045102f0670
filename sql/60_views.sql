-- leaderboard: per config, its best validation metric so far (live: epochs commit as they end).
CREATE OR REPLACE VIEW leaderboard AS
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

CREATE OR REPLACE VIEW roster AS SELECT * FROM roster_params();
