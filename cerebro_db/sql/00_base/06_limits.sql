-- Admin-set limits per role (table limits): the row '*' applies to everyone, a role's own row
-- overrides its non-NULL columns. An admin edits them with SQL:
--   UPDATE cerebro.limits SET max_epochs = 5000 WHERE role_name = '*';
--   INSERT INTO cerebro.limits (role_name, max_active_configs) VALUES ('alice', 50000);
-- Not settings: any tenant can SET a custom setting in their own session. The triggers on
-- workloads and configs (50_config_triggers.sql) enforce them, so plain INSERT / UPDATE
-- validate exactly like the SQL API.

-- A role's limits, its own row over everyone's. Invoker rights: a user reads only their own
-- row and '*' (row-level security), which is all their own work needs.
CREATE OR REPLACE FUNCTION role_limits(role_name text)
RETURNS TABLE (max_active_configs int, max_epochs int, default_unit_timeout interval, max_unit_timeout interval)
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT coalesce(r.max_active_configs, e.max_active_configs),
           coalesce(r.max_epochs, e.max_epochs),
           least(coalesce(r.default_unit_timeout, e.default_unit_timeout),
                 coalesce(r.max_unit_timeout, e.max_unit_timeout)),
           coalesce(r.max_unit_timeout, e.max_unit_timeout)
    FROM limits e
    LEFT JOIN limits r ON r.role_name = role_limits.role_name
    WHERE e.role_name = '*'
$$;

-- The refusal every limit gives: what was asked, the limit and its value, and who can raise it.
CREATE OR REPLACE FUNCTION raise_over_limit(role_name text, limit_name text, limit_value text, asked text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% exceeds the limit % = % for %', asked, limit_name, limit_value, role_name
        USING HINT = 'a cerebro_admin can raise it: ' || CASE
                         WHEN EXISTS (SELECT 1 FROM limits l WHERE l.role_name = raise_over_limit.role_name)
                         THEN format('UPDATE cerebro.limits SET %I = ... WHERE role_name = %L', limit_name, role_name)
                         ELSE format('INSERT INTO cerebro.limits (role_name, %I) VALUES (%L, ...)', limit_name, role_name)
                     END,
              ERRCODE = 'program_limit_exceeded';
END
$$;

CREATE OR REPLACE FUNCTION check_max_epochs(owner text, max_epochs int) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    allowed int := (SELECT l.max_epochs FROM role_limits(owner) l);
BEGIN
    IF max_epochs > allowed THEN
        PERFORM raise_over_limit(owner, 'max_epochs', allowed::text, format('max_epochs %s', max_epochs));
    END IF;
END
$$;

-- A workload's unit_timeout: the owner's default when NULL (a unit never runs unbounded),
-- refused above the owner's maximum.
CREATE OR REPLACE FUNCTION bounded_unit_timeout(owner text, unit_timeout interval) RETURNS interval
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    l record;
BEGIN
    SELECT * INTO l FROM role_limits(owner);
    IF unit_timeout > l.max_unit_timeout THEN
        PERFORM raise_over_limit(owner, 'max_unit_timeout', l.max_unit_timeout::text,
                                 format('unit_timeout %s', unit_timeout));
    END IF;
    RETURN coalesce(unit_timeout, l.default_unit_timeout);
END
$$;

-- Configs pending or running across the owner's workloads (the configs_claim_idx index counts them).
CREATE OR REPLACE FUNCTION active_configs(owner text) RETURNS int
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT count(*)::int
    FROM configs c JOIN workloads w USING (workload_id)
    WHERE w.owner = active_configs.owner AND c.status IN ('pending', 'running')
$$;

-- Checks the owner's configs in flight, this transaction's new ones included, against their
-- limit. Waits first for any other transaction checking the same owner, and counts in a new
-- snapshot (a new statement, read committed), so two inserts at once cannot both pass on the
-- same headroom. SECURITY DEFINER for the advisory lock (revoked from PUBLIC); a caller may
-- lock only their own key.
-- The refusal when active configs in flight would be over the owner's max_active_configs.
CREATE OR REPLACE FUNCTION check_max_active_configs(owner text, active int) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    allowed int := (SELECT l.max_active_configs FROM role_limits(owner) l);
BEGIN
    IF active > allowed THEN
        PERFORM raise_over_limit(owner, 'max_active_configs', allowed::text,
                                 format('%s configs pending or running', active));
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION check_active_configs(owner text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF NOT caller_owns(owner) THEN
        RAISE EXCEPTION 'permission denied to count the configs of %', owner
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(quota_lock_key(), hashtext(owner));
    PERFORM check_max_active_configs(owner, active_configs(owner));
END
$$;

-- Whether the owner may add one more config in flight: add_config and clone_config ask before their
-- INSERT, so that a refused config takes no config_id. Only an early refusal: check_active_configs
-- counts again after the INSERT, under the owner's lock.
CREATE OR REPLACE FUNCTION check_room_for_a_config(owner text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    PERFORM check_max_active_configs(owner, active_configs(owner) + 1);
END
$$;

-- The row '*' is what every role falls back on: it can be changed, not removed.
CREATE OR REPLACE FUNCTION limits_keep_everyone() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF OLD.role_name = '*' AND (TG_OP = 'DELETE' OR NEW.role_name <> '*') THEN
        RAISE EXCEPTION 'the limits row ''*'' (everyone''s) cannot be removed'
            USING HINT = 'change its values: UPDATE cerebro.limits SET ... WHERE role_name = ''*''',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE OR REPLACE TRIGGER limits_keep_everyone
BEFORE UPDATE OR DELETE ON limits FOR EACH ROW EXECUTE FUNCTION limits_keep_everyone();
