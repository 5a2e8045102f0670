-- Roles (cluster-wide, so created only if missing). A DBA grants them to login roles:
--   CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE cerebro_user;    (or: cerebro-db adduser alice)
-- cerebro_user:  prepares its own datasets, runs and steers its own workloads; sees only its own
--                rows (row-level security on owner).
-- cerebro_admin: a cerebro_user that may also register custom model scripts, which run as the
--                database server's own Python.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cerebro_user') THEN
        CREATE ROLE cerebro_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cerebro_admin') THEN
        CREATE ROLE cerebro_admin NOLOGIN IN ROLE cerebro_user;
    END IF;
END
$$;
