-- Materialized features (10_unit/50_features.sql): what units stored of your datasets through frozen bases, and
-- dropping them. They go with their dataset too.
--   SELECT * FROM feature_catalog;
--   SELECT drop_features('fashion_5_9', 'fashion_cnn', 'cnn/dense');   -- base and layer optional: all of them

-- One row per (dataset, base, layer) stored on this server: shape, rows per split, size.
CREATE OR REPLACE VIEW feature_catalog WITH (security_invoker = true) AS
SELECT s.feature_set_id, s.owner, d.name AS dataset, s.base_name AS base, s.base_sha256, s.layer, s.feature_shape,
       count(DISTINCT b.segment) FILTER (WHERE b.split = 'train') AS segments,
       coalesce(sum(b.rows) FILTER (WHERE b.split = 'train'), 0) AS train_rows,
       coalesce(sum(b.rows) FILTER (WHERE b.split = 'validation'), 0) AS validation_rows,
       coalesce(sum(octet_length(b.x) + octet_length(b.y)), 0) AS size_bytes,
       s.created_at
FROM feature_sets s
JOIN datasets d ON d.dataset_id = s.dataset_id
LEFT JOIN feature_buffers b ON b.feature_set_id = s.feature_set_id
GROUP BY s.feature_set_id, d.name;

-- Drops the caller's features of dataset (of one base, of one layer); returns how many feature sets went. Invoker
-- rights: row-level security leaves others' alone.
CREATE OR REPLACE FUNCTION drop_features(dataset text, base text DEFAULT NULL, layer text DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    dropped int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM datasets d WHERE d.name = drop_features.dataset) THEN
        RAISE EXCEPTION 'unknown dataset %', quote_literal(coalesce(dataset, 'NULL'))
            USING HINT = 'SELECT DISTINCT dataset, base, layer FROM feature_catalog lists the features you can drop',
                  ERRCODE = 'undefined_object';
    END IF;
    DELETE FROM feature_sets s
    USING datasets d
    WHERE d.dataset_id = s.dataset_id AND d.name = drop_features.dataset
      AND (drop_features.base IS NULL OR s.base_name = drop_features.base)
      AND (drop_features.layer IS NULL OR s.layer = drop_features.layer);
    GET DIAGNOSTICS dropped = ROW_COUNT;
    RETURN dropped;
END
$$;
