-- CALL wait_for_workload(1): block until the workload is finished (workload_finished, in
-- 20_status/), for SQL scripts; clients can also
-- run `cerebro-db wait`. It commits between polls, so no snapshot is held while the scheduler
-- trains. PostgreSQL forbids SET on a procedure that commits: instead of a pinned search_path,
-- its tables and functions are schema-qualified (pg_catalog, implicitly searched first,
-- provides the rest).
CREATE OR REPLACE PROCEDURE wait_for_workload(workload_id int, poll_seconds float8 DEFAULT 1)
LANGUAGE plpgsql
AS $$
DECLARE
    active bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cerebro.workloads w WHERE w.workload_id = wait_for_workload.workload_id) THEN
        RAISE EXCEPTION 'unknown workload %', workload_id USING ERRCODE = 'undefined_object';
    END IF;
    LOOP
        EXIT WHEN cerebro.workload_finished(workload_id);
        IF NOT cerebro.scheduler_alive() THEN
            SELECT p.configs_active INTO active FROM cerebro.workload_progress p
            WHERE p.workload_id = wait_for_workload.workload_id;
            RAISE EXCEPTION 'workload % has % configs to train, but no scheduler is running', workload_id, active
                USING HINT = 'start one with `cerebro-db scheduler` (or `cerebro-db up`)',
                      ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        COMMIT;
        PERFORM pg_catalog.pg_sleep(poll_seconds);
    END LOOP;
END
$$;
