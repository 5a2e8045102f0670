-- The memory guard (plpy/cerebro_plpy/memory.py): a config's estimated peak training memory
-- must be within cerebro.max_training_mb, checked when the config is created (the configs
-- insert trigger, 50_config_triggers.sql) and again by its unit, before the model is built.

-- The limit in MB as set (database, role or session level); cerebro.max_model_mb is its old name.
CREATE OR REPLACE FUNCTION training_memory_limit() RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting('cerebro.max_training_mb', true), ''),
                    nullif(current_setting('cerebro.max_model_mb', true), ''))
$$;

-- {"result": null} or {"error": ..., "hint": ...} for a config with these (completed) params.
CREATE OR REPLACE FUNCTION _check_training_memory(workload_id int, params jsonb) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.check_training_memory(plpy, GD, workload_id, params)
$$;
