-- prepare_dataset: pack a table into float32 buffers, shuffled once, split into train /
-- validation, spread over the segments. source_table is a regclass so that it resolves
-- with the caller's search_path (and a missing table fails before any work).
--   SELECT * FROM prepare_dataset('fashion', 'fashion_mnist_train', 'label',
--                                 feature_columns => '{pixels}', feature_shape => '{28,28,1}');
-- One text column is tokenized instead: sequence_length token ids per row, with a vocabulary of
-- vocabulary_size ids fitted on the training split (stored in datasets.vocabulary).

-- Dataset names are unique across users, but row-level security hides others' datasets:
-- SECURITY DEFINER, so that a taken name is reported as such (and nothing else is revealed).
CREATE OR REPLACE FUNCTION dataset_name_taken(name text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$ SELECT EXISTS (SELECT 1 FROM datasets d WHERE d.name = dataset_name_taken.name) $$;

DROP FUNCTION IF EXISTS _prepare_dataset(text, oid, text, text, text[], float8, int, int, text, int[], int);
CREATE OR REPLACE FUNCTION _prepare_dataset(
    name text, relation oid, source_table text, label_column text, feature_columns text[],
    validation_fraction float8, num_segments int, buffer_rows int, "normalize" text, feature_shape int[], seed int,
    sequence_length int, vocabulary_size int
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.prepare_dataset(plpy, GD, name=name, relation=relation, source_table=source_table, label_column=label_column, feature_columns=feature_columns, validation_fraction=validation_fraction, num_segments=num_segments, buffer_rows=buffer_rows, normalize=normalize, feature_shape=feature_shape, seed=seed, sequence_length=sequence_length, vocabulary_size=vocabulary_size)
$$;

DROP FUNCTION IF EXISTS prepare_dataset(text, regclass, text, text[], float8, int, int, text, int[], int);

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
    vocabulary_size int DEFAULT 20000
) RETURNS TABLE (segment int, train_rows bigint, validation_rows bigint)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF name IS NULL OR source_table IS NULL OR label_column IS NULL THEN
        RAISE EXCEPTION 'prepare_dataset needs name, source_table and label_column'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF sequence_length IS NULL OR vocabulary_size IS NULL THEN
        RAISE EXCEPTION 'sequence_length and vocabulary_size must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN QUERY
        SELECT (r ->> 'segment')::int, (r ->> 'train_rows')::bigint, (r ->> 'validation_rows')::bigint
        FROM jsonb_array_elements(raise_if_error(_prepare_dataset(
            name, source_table::oid, source_table::text, label_column, feature_columns, validation_fraction,
            num_segments, buffer_rows, "normalize", feature_shape, coalesce(seed, 0), sequence_length,
            vocabulary_size))) AS r;
END
$$;
