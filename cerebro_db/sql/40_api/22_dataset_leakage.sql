-- dataset_leakage: a dataset's exact duplicate rows (features and label equal), counted once from its buffers
-- (plpy/cerebro_plpy/leakage.py) and stored in dataset_duplicates: validation rows that copy a training row, on
-- any segment (the splits may leak into each other: validation then overstates how a model generalizes), and
-- training rows that copy another training row.
--   SELECT * FROM dataset_leakage('fashion');
-- prepare_dataset counts them as it stores the dataset; one prepared before v0.4.11 is counted at its first need.

CREATE OR REPLACE FUNCTION _count_duplicate_rows(dataset_id int) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.count_duplicate_rows(plpy, GD, dataset_id)
$$;

-- SECURITY DEFINER: users do not write dataset_duplicates; this counts from the stored buffers itself (the
-- figures cannot be passed in), and only for the caller's own datasets (the system's: any).
CREATE OR REPLACE FUNCTION dataset_leakage(name text)
RETURNS TABLE (dataset text, train_rows bigint, validation_rows bigint, validation_duplicates bigint,
               validation_duplicate_fraction float8, train_duplicates bigint, counted_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
DECLARE
    d datasets;
    counted jsonb;
BEGIN
    SELECT * INTO d FROM datasets ds WHERE ds.name = dataset_leakage.name AND caller_owns(ds.owner);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown dataset %', coalesce(name, 'NULL')
            USING HINT = 'SELECT name FROM datasets lists yours', ERRCODE = 'undefined_object';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM dataset_duplicates u WHERE u.dataset_id = d.dataset_id) THEN
        counted := raise_if_error(_count_duplicate_rows(d.dataset_id));
        -- Two first needs at once count the same: the second's row is not needed.
        INSERT INTO dataset_duplicates (dataset_id, validation_duplicates, train_duplicates, seconds)
        VALUES (d.dataset_id, (counted ->> 'validation_duplicates')::bigint, (counted ->> 'train_duplicates')::bigint,
                (counted ->> 'seconds')::float8)
        ON CONFLICT (dataset_id) DO NOTHING;
    END IF;
    RETURN QUERY
        SELECT d.name, d.train_rows, d.validation_rows, u.validation_duplicates,
               u.validation_duplicates::float8 / d.validation_rows, u.train_duplicates, u.counted_at
        FROM dataset_duplicates u WHERE u.dataset_id = d.dataset_id;
END
$$;

-- The one-line reason prepare_dataset's notice and the leakage warning give: '412 of 6,000 validation rows
-- (6.9 %) are exact copies of training rows'.
CREATE OR REPLACE FUNCTION duplicate_rows_reason(validation_duplicates bigint, validation_rows bigint) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT format('%s of %s validation rows (%s %%) are exact copies of training rows',
                  to_char(validation_duplicates, 'FM999,999,999,999,990'), to_char(validation_rows, 'FM999,999,999,999,990'),
                  CASE WHEN validation_duplicates > 0 AND 1000 * validation_duplicates < validation_rows THEN '< 0.1'
                       ELSE round(100.0 * validation_duplicates / validation_rows, 1)::text END)
$$;
