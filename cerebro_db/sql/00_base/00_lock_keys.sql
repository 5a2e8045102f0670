-- Advisory-lock key spaces (the first int of pg_try_advisory_xact_lock(int, int)).
-- A unit holds the config's and the segment's lock for its whole transaction, so a
-- crash or cancel releases them with the rollback: no stale claims to clean up.

CREATE OR REPLACE FUNCTION config_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468417 $$;

CREATE OR REPLACE FUNCTION segment_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468418 $$;

-- Held (session level) by the one scheduler allowed to run against this database.
CREATE OR REPLACE FUNCTION scheduler_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468419 $$;

-- Serializes a workload's procedure decisions (transaction level): two configs ending
-- epochs at once must not both add the last config TPE may add.
CREATE OR REPLACE FUNCTION procedure_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468420 $$;

-- On a segment server: held (transaction level) while a dataset is sent to it, so two
-- senders (two segments on one server, or distribute() beside a running scheduler) take turns.
CREATE OR REPLACE FUNCTION dataset_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468421 $$;

-- Serializes the count of a role's configs in flight against its limit (transaction level,
-- second int: hashtext(role)): two inserts at once cannot both pass on the same headroom.
CREATE OR REPLACE FUNCTION quota_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468422 $$;

-- On a segment server: held (transaction level) while an imported model (a transfer base) is sent to it,
-- second int: the coordinator's imported_model_id (as dataset_lock_key for datasets).
CREATE OR REPLACE FUNCTION imported_model_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468423 $$;

-- Held (transaction level, second int: hashtext of the piece) by the unit materializing one segment's split of a
-- dataset through a frozen base (10_unit/50_features.sql), so that two units never compute the same piece.
CREATE OR REPLACE FUNCTION features_lock_key() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = cerebro, pg_temp
AS $$ SELECT 1129468424 $$;
