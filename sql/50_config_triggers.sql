-- Plain INSERT INTO configs(workload_id, params) inherits the workload's max_epochs.
CREATE OR REPLACE FUNCTION configs_fill_defaults() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF NEW.max_epochs IS NULL THEN
        SELECT w.max_epochs INTO NEW.max_epochs FROM workloads w WHERE w.workload_id = NEW.workload_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_fill_defaults
BEFORE INSERT ON configs FOR EACH ROW EXECUTE FUNCTION configs_fill_defaults();

-- Wake idle scheduler segments when there may be new work (delivered at commit).
CREATE OR REPLACE FUNCTION notify_work() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('cerebro_units', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER configs_notify_work
AFTER INSERT OR UPDATE ON configs FOR EACH STATEMENT EXECUTE FUNCTION notify_work();

CREATE OR REPLACE TRIGGER workloads_notify_work
AFTER UPDATE ON workloads FOR EACH STATEMENT EXECUTE FUNCTION notify_work();
