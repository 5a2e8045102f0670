-- prepare_dataset: pack a table into float32 buffers, shuffled once, split into train /
-- validation, spread over the segments. With replication r, the training split is cut into
-- num_segments / r shards, each held by r segments (segment_shard, 10_claim.sql): dataset_buffers
-- holds each shard once, under its shard id in the segment column (with r = 1, the segment's own);
-- a segment server receives the shard its segment holds (cerebro_db/backends/multi_server.py).
-- source_table is a regclass so that it resolves with the caller's search_path (and a missing
-- table fails before any work).
--   SELECT * FROM prepare_dataset('fashion', 'fashion_mnist_train', 'label',
--                                 feature_columns => '{pixels}', feature_shape => '{28,28,1}');
-- One text column is tokenized instead: sequence_length token ids per row, with a vocabulary of
-- vocabulary_size ids fitted on the training split (stored in datasets.vocabulary).

-- Dataset names are unique across users, but row-level security hides others' datasets:
-- SECURITY DEFINER, so that a taken name is reported as such (and nothing else is revealed).
CREATE OR REPLACE FUNCTION dataset_name_taken(name text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$ SELECT EXISTS (SELECT 1 FROM datasets d WHERE d.name = dataset_name_taken.name) $$;

CREATE OR REPLACE FUNCTION _prepare_dataset(
    name text, relation oid, source_table text, label_column text, feature_columns text[],
    validation_fraction float8, num_segments int, buffer_rows int, "normalize" text, feature_shape int[], seed int,
    sequence_length int, vocabulary_size int, replication int
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.prepare_dataset(plpy, GD, name=name, relation=relation, source_table=source_table, label_column=label_column, feature_columns=feature_columns, validation_fraction=validation_fraction, num_segments=num_segments, buffer_rows=buffer_rows, normalize=normalize, feature_shape=feature_shape, seed=seed, sequence_length=sequence_length, vocabulary_size=vocabulary_size, replication=replication)
$$;

-- The writers. _prepare_dataset reads the source table with the caller's rights and packs it;
-- it writes only through these SECURITY DEFINER functions (tenants have no INSERT on datasets
-- or dataset_buffers), which stamp the owner themselves and refuse what prepare_dataset could
-- not have written: a row whose shape, classes or normalization lie, a buffer that does not
-- decode into rows of that shape with valid labels, buffers beyond the rows the dataset
-- declares, and (at commit, datasets_complete) a dataset whose buffers fall short of them.
CREATE OR REPLACE FUNCTION _check_dataset(
    name text, label_column text, feature_columns text[], feature_shape int[], num_classes int, class_values jsonb,
    "normalize" text, norm_shift float8[], norm_scale float8[], num_segments int, cluster_segments int, buffer_rows int,
    validation_fraction float8, train_rows bigint, validation_rows bigint, vocabulary text[], replication int
) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.check_dataset(name=name, label_column=label_column, feature_columns=feature_columns, feature_shape=feature_shape, num_classes=num_classes, class_values=class_values, normalize=normalize, norm_shift=norm_shift, norm_scale=norm_scale, num_segments=num_segments, cluster_segments=cluster_segments, buffer_rows=buffer_rows, validation_fraction=validation_fraction, train_rows=train_rows, validation_rows=validation_rows, vocabulary=vocabulary, replication=replication)
$$;

CREATE OR REPLACE FUNCTION _check_dataset_buffer(
    feature_shape int[], num_classes int, vocabulary_size int, num_segments int, buffer_rows int, split text,
    segment int, rows int, x bytea, y bytea
) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.check_buffer(feature_shape=feature_shape, num_classes=num_classes, vocabulary_size=vocabulary_size, num_segments=num_segments, buffer_rows=buffer_rows, split=split, segment=segment, rows=rows, x=x, y=y)
$$;

CREATE OR REPLACE FUNCTION _store_dataset(
    name text, source_table text, label_column text, feature_columns text[], feature_shape int[], num_classes int,
    class_values jsonb, "normalize" text, norm_shift float8[], norm_scale float8[], num_segments int, buffer_rows int,
    validation_fraction float8, train_rows bigint, validation_rows bigint, seed int, vocabulary text[], replication int
) RETURNS int
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    owner text := owner_of_new_rows();
    new_dataset int;
BEGIN
    IF num_nulls(name, source_table, label_column, feature_columns, feature_shape, num_classes, class_values,
                 "normalize", norm_shift, norm_scale, num_segments, buffer_rows, validation_fraction, train_rows,
                 validation_rows, seed, replication) > 0 THEN
        RAISE EXCEPTION 'only vocabulary may be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM raise_if_error(_check_dataset(
        name, label_column, feature_columns, feature_shape, num_classes, class_values, "normalize", norm_shift,
        norm_scale, num_segments, (SELECT count(*)::int FROM segments), buffer_rows, validation_fraction, train_rows,
        validation_rows, vocabulary, replication));
    INSERT INTO datasets (owner, name, source_table, label_column, feature_columns, feature_shape, num_classes,
                          class_values, "normalize", norm_shift, norm_scale, num_segments, buffer_rows,
                          validation_fraction, train_rows, validation_rows, seed, vocabulary, replication)
    VALUES (owner, name, source_table, label_column, feature_columns, feature_shape, num_classes, class_values,
            "normalize", norm_shift, norm_scale, num_segments, buffer_rows, validation_fraction, train_rows,
            validation_rows, seed, vocabulary, replication)
    RETURNING dataset_id INTO new_dataset;
    RETURN new_dataset;
END
$$;

CREATE OR REPLACE FUNCTION _store_dataset_buffer(
    dataset_id int, split text, segment int, buffer_id int, rows int, x bytea, y bytea
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    d datasets;
    declared bigint;
    stored bigint;
BEGIN
    -- Locked: two writers at once cannot both fit in the rows left.
    SELECT * INTO d FROM datasets ds WHERE ds.dataset_id = dataset_id AND ds.owner = acting_role() FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown dataset %', coalesce(dataset_id::text, 'NULL')
            USING HINT = 'prepare_dataset writes the buffers of the caller''s own datasets',
                  ERRCODE = 'undefined_object';
    END IF;
    IF num_nulls(split, segment, buffer_id, rows, x, y) > 0 THEN
        RAISE EXCEPTION 'a dataset buffer has no NULL values' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM raise_if_error(_check_dataset_buffer(d.feature_shape, d.num_classes, cardinality(d.vocabulary),
                                                 d.num_segments / d.replication, d.buffer_rows, split, segment, rows,
                                                 x, y));
    declared := CASE split WHEN 'train' THEN d.train_rows ELSE d.validation_rows END;
    stored := (SELECT coalesce(sum(b.rows), 0) FROM dataset_buffers b
               WHERE b.dataset_id = d.dataset_id AND b.split = split);
    IF stored + rows > declared THEN
        RAISE EXCEPTION 'dataset % declares % % rows; % are stored and this buffer has %', d.name, declared, split,
                        stored, rows
            USING HINT = 'a dataset''s buffers are written once, by prepare_dataset',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO dataset_buffers (dataset_id, split, segment, buffer_id, rows, x, y)
    VALUES (d.dataset_id, split, segment, buffer_id, rows, x, y);
END
$$;

-- At commit: a new dataset's buffers hold exactly the rows it declares, and every shard has
-- training rows (an epoch visits each). SECURITY DEFINER: it must see every buffer, whatever
-- role the session has taken by then. The schema owner's own copies are exempt: a segment
-- server (multi-server backend) holds only the shards of the segments it serves.
CREATE OR REPLACE FUNCTION datasets_complete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    d datasets;
    stored record;
BEGIN
    IF pg_has_role(acting_role(), (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'cerebro'), 'USAGE') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO d FROM datasets ds WHERE ds.dataset_id = NEW.dataset_id;
    IF NOT FOUND THEN
        RETURN NULL;  -- removed again in the same transaction
    END IF;
    SELECT coalesce(sum(b.rows) FILTER (WHERE b.split = 'train'), 0) AS train,
           coalesce(sum(b.rows) FILTER (WHERE b.split = 'validation'), 0) AS validation,
           count(DISTINCT b.segment) FILTER (WHERE b.split = 'train') AS shards
    INTO stored
    FROM dataset_buffers b WHERE b.dataset_id = d.dataset_id;
    IF stored.train <> d.train_rows OR stored.validation <> d.validation_rows
       OR stored.shards <> d.num_segments / d.replication THEN
        RAISE EXCEPTION 'dataset % is incomplete: it declares % training and % validation rows in % shards, '
                        'its buffers hold % and % in %', d.name, d.train_rows, d.validation_rows,
                        d.num_segments / d.replication, stored.train, stored.validation, stored.shards
            USING HINT = 'datasets are written whole by prepare_dataset', ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END
$$;

-- CREATE OR REPLACE does not apply to constraint triggers.
DROP TRIGGER IF EXISTS datasets_complete ON datasets;
CREATE CONSTRAINT TRIGGER datasets_complete
AFTER INSERT ON datasets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION datasets_complete();

CREATE OR REPLACE FUNCTION prepare_dataset(
    name text,
    source_table regclass,
    label_column text,
    feature_columns text[] DEFAULT NULL,
    validation_fraction float8 DEFAULT 0.1,
    num_segments int DEFAULT NULL,
    buffer_rows int DEFAULT NULL,
    "normalize" text DEFAULT 'standard',
    feature_shape int[] DEFAULT NULL,
    seed int DEFAULT 0,
    sequence_length int DEFAULT 128,
    vocabulary_size int DEFAULT 20000,
    replication int DEFAULT 1
) RETURNS TABLE (segment int, train_rows bigint, validation_rows bigint)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    copies record;
    spread int := coalesce(num_segments, (SELECT count(*)::int FROM segments));
BEGIN
    IF name IS NULL OR source_table IS NULL OR label_column IS NULL THEN
        RAISE EXCEPTION 'prepare_dataset needs name, source_table and label_column'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF sequence_length IS NULL OR vocabulary_size IS NULL THEN
        RAISE EXCEPTION 'sequence_length and vocabulary_size must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A bad num_segments is refused (with its own message) by _prepare_dataset.
    IF replication IS NULL OR replication < 1 OR (spread >= 1 AND replication > spread) THEN
        RAISE EXCEPTION 'replication must be between 1 and the dataset''s % segments, got %', spread,
                        coalesce(replication::text, 'NULL')
            USING HINT = 'replication r keeps each training shard on r segments: 1 (the default) stores the data once, '
                         'num_segments stores it on every segment (more storage, so configs wait less for a segment)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
        SELECT (r ->> 'segment')::int, (r ->> 'train_rows')::bigint, (r ->> 'validation_rows')::bigint
        FROM jsonb_array_elements(raise_if_error(_prepare_dataset(
            name, source_table::oid, source_table::text, label_column, feature_columns, validation_fraction,
            num_segments, buffer_rows, "normalize", feature_shape, coalesce(seed, 0), sequence_length,
            vocabulary_size, replication))) AS r;
    -- Counted now, once (the dataset never changes): the leakage warning reads it at a workload's first epoch end.
    SELECT l.validation_duplicates, l.validation_rows INTO copies FROM dataset_leakage(prepare_dataset.name) l;
    IF copies.validation_duplicates > 0 THEN
        RAISE NOTICE '%: %', prepare_dataset.name,
                     duplicate_rows_reason(copies.validation_duplicates, copies.validation_rows)
            USING HINT = 'validation metrics will overstate how models generalize: remove the copies from the source'
                         ' table and prepare the dataset again (SELECT * FROM dataset_leakage(...) shows the counts)';
    END IF;
END
$$;
