-- Seeds are int4 (what Keras and numpy take), at most seed_bound(); cerebro_db.models.INT_MAX is the same
-- bound for the column's default.
CREATE OR REPLACE FUNCTION seed_bound() RETURNS int
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT 2147483647 $$;

-- The n-th seed after seed: config n of a workload gets derived_seed(workload seed, n), reproducible and
-- distinct per config, wrapping below seed_bound() rather than overflowing int4.
CREATE OR REPLACE FUNCTION derived_seed(seed int, n bigint) RETURNS int
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT ((seed::bigint + n) % seed_bound())::int $$;
