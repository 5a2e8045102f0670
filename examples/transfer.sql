-- Transfer learning: a cnn pretrained here on Fashion-MNIST classes 0-4 (Debian package dataset-fashion-mnist),
-- exported and imported back as a base, then fine-tuned on classes 5-9 with a new head, searching which of the
-- base's layers the head reads. (A base trained elsewhere comes in with cerebro-db import-model NAME FILE.keras.)
-- From the repository root, on the running cluster (`cerebro-db up`):
--   .venv/bin/cerebro-db psql -f examples/transfer.sql              (-v rows=2000 -v epochs=1: quicker)
\set ON_ERROR_STOP on
\if :{?rows} \else \set rows 10000 \endif
\if :{?epochs} \else \set epochs 3 \endif

-- Start afresh: the datasets' workloads first, then the base (drop_imported_model refuses while configs use it).
DELETE FROM workloads WHERE dataset IN ('example_fashion_0_4', 'example_fashion_5_9');
DELETE FROM datasets WHERE name IN ('example_fashion_0_4', 'example_fashion_5_9');
SELECT drop_imported_model(name) FROM imported_model_catalog WHERE name = 'example_fashion_cnn';
DROP TABLE IF EXISTS example_transfer_fashion, example_fashion_0_4, example_fashion_5_9,
                     example_fashion_5_9_predictions;

CREATE TABLE example_transfer_fashion (id int PRIMARY KEY, label int NOT NULL, pixels bytea NOT NULL);
\setenv CEREBRO_SAMPLE_ROWS :rows
\copy example_transfer_fashion FROM PROGRAM '.venv/bin/python -m cerebro_db.sample_data fashion-mnist'
CREATE TABLE example_fashion_0_4 AS SELECT * FROM example_transfer_fashion WHERE label < 5;
CREATE TABLE example_fashion_5_9 AS SELECT * FROM example_transfer_fashion WHERE label >= 5;

SELECT * FROM prepare_dataset('example_fashion_0_4', 'example_fashion_0_4', 'label',
                              feature_columns => '{pixels}', feature_shape => '{28,28,1}');
SELECT * FROM prepare_dataset('example_fashion_5_9', 'example_fashion_5_9', 'label',
                              feature_columns => '{pixels}', feature_shape => '{28,28,1}');

-- 1. Pretrain the base on classes 0-4 and import it: export_model's .keras file, as import_model takes it.
SELECT run_model_selection('example_fashion_0_4', 'cnn', '{"filters": [8], "dense_units": [32], "lr": [0.003]}',
                           max_epochs => :epochs, seed => 1) AS pretrain_workload \gset
CALL wait_for_workload(:pretrain_workload);
SELECT config_id AS pretrained FROM leaderboard WHERE workload_id = :pretrain_workload ORDER BY rank LIMIT 1 \gset
SELECT import_model('example_fashion_cnn', export_model(:pretrained), 'cnn pretrained on Fashion-MNIST classes 0-4');

-- Its layers: the exported normalization, then the cnn's own (named cnn/...).
SELECT * FROM model_layers('example_fashion_cnn');

-- 2. Fine-tune on classes 5-9: a new head on the cnn's flatten or dense layer (the last two before its
-- classifier), the base frozen; the two layers are searched like any param.
SELECT jsonb_agg(name ORDER BY index) AS head_layers
FROM model_layers('example_fashion_cnn')
WHERE class IN ('Flatten', 'Dense') AND index < (SELECT max(index) FROM model_layers('example_fashion_cnn')) \gset
SELECT run_model_selection('example_fashion_5_9', 'transfer',
                           jsonb_build_object('base', 'example_fashion_cnn', 'layer', :'head_layers'::jsonb,
                                              'head_units', 32, 'lr', 0.003),
                           max_epochs => :epochs, seed => 2) AS transfer_workload \gset
CALL wait_for_workload(:transfer_workload);

SELECT rank, config_id, params ->> 'layer' AS layer, status, epochs_done,
       round(best_val_metric::numeric, 4) AS best_val_accuracy
FROM leaderboard WHERE workload_id = :transfer_workload;

-- The best fine-tuned config predicts like any other (its export holds the base and the head).
SELECT config_id AS best FROM leaderboard WHERE workload_id = :transfer_workload ORDER BY rank LIMIT 1 \gset
SELECT predict(:best, 'example_fashion_5_9', 'id', 'example_fashion_5_9_predictions') AS predicted_rows;
SELECT length(export_model(:best)) AS keras_file_bytes;
