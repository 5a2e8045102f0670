-- Images: Fashion-MNIST (Debian package dataset-fashion-mnist) with the cnn and mobilenetv2,
-- then the best config evaluated, used for predictions and exported.
-- From the repository root, on the running cluster (`cerebro-db up`):
--   .venv/bin/cerebro-db psql -f examples/image.sql                 (-v rows=2000 -v epochs=1: quicker)
\set ON_ERROR_STOP on
\if :{?rows} \else \set rows 10000 \endif
\if :{?epochs} \else \set epochs 3 \endif

-- Start afresh: a dataset's workloads (with their configs, states and metrics) go first.
DELETE FROM workloads WHERE dataset = 'example_fashion';
DELETE FROM datasets WHERE name = 'example_fashion';
DROP TABLE IF EXISTS example_fashion, example_fashion_predictions;

CREATE TABLE example_fashion (id int PRIMARY KEY, label int NOT NULL, pixels bytea NOT NULL);
\setenv CEREBRO_SAMPLE_ROWS :rows
\copy example_fashion FROM PROGRAM '.venv/bin/python -m cerebro_db.sample_data fashion-mnist'

-- 28x28 grayscale pixels, standardized with the training split's statistics.
SELECT * FROM prepare_dataset('example_fashion', 'example_fashion', 'label',
                              feature_columns => '{pixels}', feature_shape => '{28,28,1}');

SELECT run_model_selection('example_fashion', 'cnn', '{"lr": [0.001, 0.003], "filters": [16]}',
                           max_epochs => :epochs, seed => 1) AS cnn_workload \gset
-- mobilenetv2 resizes the 28x28 images to 32x32, the smallest it takes.
SELECT run_model_selection('example_fashion', 'mobilenetv2', '{"alpha": [0.35], "lr": [0.003]}',
                           max_epochs => :epochs, seed => 2) AS mobilenet_workload \gset
CALL wait_for_workload(:cnn_workload);
CALL wait_for_workload(:mobilenet_workload);

SELECT workload_id, rank, config_id, params ->> 'lr' AS lr, status, epochs_done,
       round(best_val_metric::numeric, 4) AS best_val_accuracy
FROM leaderboard WHERE workload_id IN (:cnn_workload, :mobilenet_workload);

SELECT config_id AS best FROM leaderboard WHERE workload_id IN (:cnn_workload, :mobilenet_workload)
ORDER BY best_val_metric DESC NULLS LAST LIMIT 1 \gset
SELECT * FROM evaluate(:best, 'example_fashion');                  -- its validation split

SELECT predict(:best, 'example_fashion', 'id', 'example_fashion_predictions') AS predicted_rows;
SELECT round(avg((p.label = f.label)::int), 4) AS accuracy_on_all_rows
FROM example_fashion_predictions p JOIN example_fashion f USING (id);

SELECT length(export_model(:best)) AS keras_file_bytes;          -- or: cerebro-db export <config> -o best.keras
