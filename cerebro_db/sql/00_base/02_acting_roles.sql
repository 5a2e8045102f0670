-- Who is acting: the system (scheduler, procedures, the SQL API's own bookkeeping) or a user.

-- The system's own writes set cerebro.internal = on for their transaction, and the status
-- guards let them through. Anyone can set a custom setting, so it counts only for the role
-- that owns the schema: the scheduler, and SECURITY DEFINER functions of the API.
CREATE OR REPLACE FUNCTION is_internal() RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT coalesce(current_setting('cerebro.internal', true), '') = 'on'
       AND pg_has_role(current_user, (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'cerebro'), 'USAGE')
$$;

-- The role a user acts as: inside a SECURITY DEFINER function current_user is the definer,
-- so this reads the session's role (SET ROLE, else the login role) instead.
CREATE OR REPLACE FUNCTION acting_role() RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$ SELECT coalesce(nullif(current_setting('role'), 'none'), session_user) $$;

-- For SECURITY DEFINER functions: whether the caller owns the rows at stake (the same rule as
-- row-level security, owner = current_user, applied to the caller).
CREATE OR REPLACE FUNCTION caller_owns(owner text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT caller_owns.owner = acting_role()
        OR pg_has_role(acting_role(), (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'cerebro'), 'USAGE')
$$;

-- Who acts, for the event log: the configs BEFORE triggers (which run with the statement's own
-- rights, where is_internal() cannot be forged) stamp it into the row (configs.event_actor), and
-- the AFTER trigger logs it from there. Never a setting: a setting can be changed between the
-- two triggers (RETURNING, a CTE, a WHERE clause evaluated per row).
CREATE OR REPLACE FUNCTION event_actor() RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$ SELECT CASE WHEN is_internal() THEN 'cerebro' ELSE acting_role() END $$;

-- For the SECURITY DEFINER writers (datasets, workloads): the owner they stamp on a new row is
-- the acting role, never a value the caller passes, and only a login role (SET ROLE
-- cerebro_user would make rows every member shares; row-level security's WITH CHECK rule).
CREATE OR REPLACE FUNCTION owner_of_new_rows() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    owner text := acting_role();
BEGIN
    IF NOT coalesce((SELECT r.rolcanlogin FROM pg_roles r WHERE r.rolname = owner), false) THEN
        RAISE EXCEPTION 'role % cannot own datasets or workloads: only login roles own rows', owner
            USING HINT = 'act as your own login role (RESET ROLE), not as a group role its members share',
                  ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN owner;
END
$$;

-- For SECURITY DEFINER functions, where is_internal() reads the definer (true for anyone who sets
-- cerebro.internal): whether the system itself is the caller, the setting on and the acting role the
-- schema owner's (the scheduler accepting a suggestion: 30_procedures/95_autonomy.sql).
CREATE OR REPLACE FUNCTION caller_is_system() RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT coalesce(current_setting('cerebro.internal', true), '') = 'on'
       AND pg_has_role(acting_role(), (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'cerebro'), 'USAGE')
$$;

-- Who acts, for what a SECURITY DEFINER function logs: 'cerebro' (as event_actor()) or the acting role.
CREATE OR REPLACE FUNCTION caller_actor() RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$ SELECT CASE WHEN caller_is_system() THEN 'cerebro' ELSE acting_role() END $$;
