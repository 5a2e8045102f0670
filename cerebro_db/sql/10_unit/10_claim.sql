-- The MOP schedule, decided in SQL. A unit = one config, one pass over one training shard, on a
-- segment holding it. Invariants: a config runs on at most one segment at a time (config lock), a
-- segment runs one unit at a time (segment lock), and a config visits each shard once per epoch
-- (model_states.visited_segments holds the shard ids, reset when the epoch completes).

-- The shard a segment holds of a dataset spread over num_segments segments with replication r
-- (datasets.replication): num_segments / r shards, shard k on every segment s with s mod shards = k
-- (at least r holders each; more when r does not divide num_segments). With r = 1, its own.
-- NULL for a segment beyond the dataset's.
CREATE OR REPLACE FUNCTION segment_shard(segment int, num_segments int, replication int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT CASE WHEN segment >= 0 AND segment < num_segments THEN segment % (num_segments / replication) END $$;

-- The fits rule: where the config's progress lets it train next, a segment of its dataset holding a
-- shard it has not visited in the current epoch. Part of unit_is_legal; the hop checks only this and
-- its claim (check_unit_in_hand, 40_hop.sql), since a unit in flight when its user stops the config
-- still commits.
CREATE OR REPLACE FUNCTION unit_fits(config_id int, segment int) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM configs c
        JOIN workloads w USING (workload_id)
        JOIN datasets d ON d.name = w.dataset
        LEFT JOIN model_states s USING (config_id)
        WHERE c.config_id = unit_fits.config_id
          AND unit_fits.segment >= 0 AND unit_fits.segment < d.num_segments
          AND NOT (segment_shard(unit_fits.segment, d.num_segments, d.replication)
                   = ANY (coalesce(s.visited_segments, '{}')))
    )
$$;

-- Whether a unit of the config may start on the segment now: the one definition of a legal unit.
-- claim_unit decides with it; the scheduler asks it whether any work is left.
CREATE OR REPLACE FUNCTION unit_is_legal(config_id int, segment int) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT unit_fits(unit_is_legal.config_id, unit_is_legal.segment) AND EXISTS (
        SELECT 1
        FROM configs c
        JOIN workloads w USING (workload_id)
        WHERE c.config_id = unit_is_legal.config_id
          AND c.status IN ('pending', 'running')
          AND w.status = 'running'
          AND c.epochs_done < c.max_epochs
    )
$$;

-- Units in flight, read from the locks their transactions hold (exact, never stale).
CREATE OR REPLACE VIEW active_units WITH (security_invoker = true) AS
SELECT cl.objid::int AS config_id,
       c.workload_id,
       sl.objid::int AS segment,
       cl.pid,
       a.xact_start AS started_at
FROM pg_locks cl
JOIN pg_locks sl ON sl.pid = cl.pid AND sl.locktype = 'advisory' AND sl.granted
                AND sl.classid = segment_lock_key()::oid AND sl.objsubid = 2
JOIN configs c ON c.config_id = cl.objid::int
LEFT JOIN pg_stat_activity a ON a.pid = cl.pid
WHERE cl.locktype = 'advisory' AND cl.granted
  AND cl.classid = config_lock_key()::oid AND cl.objsubid = 2
  AND cl.database = (SELECT oid FROM pg_database WHERE datname = current_database());

CREATE OR REPLACE FUNCTION unit_claimed(config_id int) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.pid = pg_backend_pid()
          AND l.classid = config_lock_key()::oid AND l.objid = unit_claimed.config_id::oid AND l.objsubid = 2
    )
$$;

-- Claim the next legal unit for a segment; the caller then runs its hop (unit_context, train_hop,
-- record_hop: 40_hop.sql) in the same transaction, and the locks taken here end with it. Returns
-- no row when nothing may run.
-- Order: the owner with the fewest units in flight (fair share of segments across users),
-- then their workload with the fewest units in flight, then the config with the least
-- progress (configs advance together), then at random (each config visits shards in a
-- random order). In small steps, from the configs_claim_idx index: workloads in that order
-- (ranked by their least epochs done), and in each, its runnable configs a window of
-- claim_window() at a time by epochs done; a window is ordered by exact progress (epochs done,
-- then shards visited this epoch), then at random. The first window holding a legal,
-- unclaimed config wins, and every runnable config is reached before the claim gives up.
CREATE OR REPLACE FUNCTION claim_window() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 64 $$;

CREATE OR REPLACE FUNCTION claim_unit(segment int)
RETURNS TABLE (config_id int, workload_id int, epoch int)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    workload record;
    last_epochs int;
    last_config int;
    seen int;
    legal int[];
    candidate int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM segments s WHERE s.segment = claim_unit.segment) THEN
        RAISE EXCEPTION 'unknown segment %', claim_unit.segment
            USING HINT = 'segments are listed in cerebro.segments', ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_try_advisory_xact_lock(segment_lock_key(), claim_unit.segment) THEN
        RETURN;  -- another session is running a unit on this segment
    END IF;
    FOR workload IN
        WITH in_flight AS (
            SELECT a.workload_id, w.owner FROM active_units a JOIN workloads w USING (workload_id)
        ), runnable AS (
            SELECT w.workload_id, w.owner, d.num_segments / d.replication AS shards,
                   segment_shard(claim_unit.segment, d.num_segments, d.replication) AS shard,
                   (SELECT min(c.epochs_done) FROM configs c
                    WHERE c.workload_id = w.workload_id AND c.status IN ('pending', 'running')) AS least_epochs
            FROM workloads w
            JOIN datasets d ON d.name = w.dataset
            WHERE w.status = 'running' AND claim_unit.segment < d.num_segments
        )
        SELECT r.workload_id, r.shards, r.shard
        FROM runnable r
        WHERE r.least_epochs IS NOT NULL
        ORDER BY (SELECT count(*) FROM in_flight f WHERE f.owner = r.owner),
                 (SELECT count(*) FROM in_flight f WHERE f.workload_id = r.workload_id),
                 r.least_epochs, random()
    LOOP
        last_epochs := -1;
        last_config := 0;
        LOOP
            -- The window's candidates, in claim order. Reading them in bulk narrows the window cheaply to
            -- configs that could run here (an epoch left, this segment's shard not visited); whether one may run
            -- is unit_is_legal's to decide, once its lock is held.
            SELECT count(*),
                   (array_agg(win.config_id ORDER BY win.progress, random())
                       FILTER (WHERE win.epochs_done < win.max_epochs
                               AND NOT (workload.shard = ANY (win.visited)))),
                   (array_agg(win.epochs_done ORDER BY win.epochs_done DESC, win.config_id DESC))[1],
                   (array_agg(win.config_id ORDER BY win.epochs_done DESC, win.config_id DESC))[1]
            INTO seen, legal, last_epochs, last_config
            FROM (
                SELECT page.*, page.epochs_done * workload.shards + cardinality(page.visited) AS progress
                FROM (SELECT c.config_id, c.epochs_done, c.max_epochs,
                             coalesce((SELECT s.visited_segments FROM model_states s WHERE s.config_id = c.config_id),
                                      '{}') AS visited  -- one key lookup per config of the window
                      FROM configs c
                      WHERE c.workload_id = workload.workload_id AND c.status IN ('pending', 'running')
                        AND (c.epochs_done, c.config_id) > (last_epochs, last_config)
                        -- Not while an attempt of it is unsettled (sql/10_unit/42_unit_attempts.sql): a crash
                        -- must be counted against its budget before it runs again.
                        AND NOT EXISTS (SELECT 1 FROM unit_attempts a
                                        WHERE a.config_id = c.config_id AND a.outcome IS NULL)
                      ORDER BY c.epochs_done, c.config_id
                      LIMIT claim_window()) page
            ) win;
            FOREACH candidate IN ARRAY coalesce(legal, '{}') LOOP
                CONTINUE WHEN NOT pg_try_advisory_xact_lock(config_lock_key(), candidate);
                -- A new statement sees units committed since the candidates were read. If the
                -- config stopped being legal meanwhile, it can run nowhere now, so keeping its
                -- (unreleasable) transaction lock until this transaction ends costs nothing.
                IF unit_is_legal(candidate, claim_unit.segment) THEN
                    RETURN QUERY SELECT c.config_id, c.workload_id, c.epochs_done + 1
                                 FROM configs c WHERE c.config_id = candidate;
                    RETURN;
                END IF;
            END LOOP;
            EXIT WHEN seen < claim_window();  -- the workload's last window
        END LOOP;
    END LOOP;
END
$$;
