-- A unit trains one config for one pass over one segment's shard and commits the hop (state,
-- progress, unit log, and at an epoch's end its validation metrics). The scheduler runs, per segment:
--   local segment:   BEGIN; SELECT * FROM claim_unit(s); SELECT run_unit(c, s); COMMIT;
--   segment server:  BEGIN; SELECT * FROM claim_unit(s); SELECT * FROM unit_context(c, s);
--                    (on the segment server) SELECT * FROM train_hop(context, state);
--                    SELECT record_hop(c, s, summary, new_state); COMMIT;
-- The coordinator's transaction holds the claim throughout, so a hop commits whole or not at all.

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

CREATE OR REPLACE FUNCTION _unit_context(config_id int, segment int, OUT outcome jsonb, OUT state bytea)
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.unit_context(plpy, GD, config_id, segment)
$$;

-- What the claimed unit trains (model, params, dataset, epoch, ...) and the config's state.
CREATE OR REPLACE FUNCTION unit_context(config_id int, segment int) RETURNS TABLE (context jsonb, state bytea)
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$ SELECT raise_if_error(u.outcome), u.state FROM _unit_context(config_id, segment) u $$;

CREATE OR REPLACE FUNCTION _train_hop(context jsonb, state bytea, OUT outcome jsonb, OUT new_state bytea)
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.train_hop(plpy, GD, context, state)
$$;

-- On a segment server: one pass over its shard of context's segment; writes nothing.
CREATE OR REPLACE FUNCTION train_hop(context jsonb, state bytea) RETURNS TABLE (summary jsonb, new_state bytea)
LANGUAGE sql VOLATILE SET search_path = cerebro, pg_temp
AS $$ SELECT raise_if_error(t.outcome), t.new_state FROM _train_hop(context, state) t $$;

CREATE OR REPLACE FUNCTION _record_hop(config_id int, segment int, summary jsonb, state bytea) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.record_hop(plpy, GD, config_id, segment, summary, state)
$$;

CREATE OR REPLACE FUNCTION record_hop(config_id int, segment int, summary jsonb, state bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    RETURN raise_if_error(_record_hop(config_id, segment, summary, state));
END
$$;
