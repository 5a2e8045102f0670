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

-- Inside a SECURITY DEFINER function current_user is the definer, so the caller is the
-- session's role: true when it is (or has the rights of) the owner of the rows at stake.
CREATE OR REPLACE FUNCTION caller_owns(owner text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_roles r
                   WHERE r.rolname = caller_owns.owner AND pg_has_role(session_user, r.oid, 'USAGE'))
$$;
