-- Using the winners: evaluate a config on a dataset, predict a table, export a .keras file.
-- Each uses the config's latest committed state.
--   SELECT * FROM evaluate(3, 'fashion');                        -- its validation split (see evaluate below)
--   SELECT predict(3, 'fashion_mnist_test', 'id', 'fashion_predictions');
--   SELECT export_model(3);                                       -- or: cerebro-db export 3 -o best.keras

-- They run with the caller's rights (predict reads the caller's table and writes theirs);
-- model_states is the system's, so the state comes through this one definer function.
CREATE OR REPLACE FUNCTION config_state(config_id int) RETURNS bytea
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
    SELECT stored_state(c.config_id) FROM configs c JOIN workloads w USING (workload_id)
    WHERE c.config_id = config_state.config_id AND caller_owns(w.owner)
$$;

-- Its size, for the dashboard's config page (a refresh does not read a big model's whole state).
CREATE OR REPLACE FUNCTION config_state_bytes(config_id int) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
    SELECT s.state_bytes FROM model_states s JOIN configs c USING (config_id) JOIN workloads w USING (workload_id)
    WHERE s.config_id = config_state_bytes.config_id AND caller_owns(w.owner)
$$;

CREATE OR REPLACE FUNCTION _evaluate(config_id int, dataset text) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.evaluate(plpy, GD, config_id, dataset)
$$;

-- On the config's own dataset: its validation split (right after an epoch this repeats the
-- epoch's val_loss and val_metric); on another dataset with the same features and classes:
-- all of its rows.
CREATE OR REPLACE FUNCTION evaluate(config_id int, dataset text) RETURNS TABLE (loss float8, metric float8)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    outcome jsonb;
BEGIN
    PERFORM check_transfer_base(config_id);
    outcome := raise_if_error(_evaluate(config_id, dataset));
    RETURN QUERY SELECT (outcome ->> 'loss')::float8, (outcome ->> 'metric')::float8;
END
$$;

CREATE OR REPLACE FUNCTION _predict_part(
    config_id int, relation oid, id_column text, output_schema text, output_table text, part int, parts int
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.predict_part(plpy, GD, config_id=config_id, relation=relation, id_column=id_column, output_schema=output_schema, output_table=output_table, part=part, parts=parts)
$$;

-- Creates output_table (id_column, label, probabilities real[]) for predict: label is the
-- dataset's original label value (its JSON kind: bigint, float8, boolean, else text),
-- probabilities follow the order of datasets.class_values. An unqualified output_table is
-- created in source_table's schema. Returns where it is and into how many parts (the
-- dataset's segments) the rows are split.
CREATE OR REPLACE FUNCTION _predict_begin(
    config_id int, source_table regclass, id_column text, output_table text,
    OUT output_schema text, OUT output_name text, OUT parts int
)
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    classes jsonb;
    id_type text;
    label_type text;
    target text[];
BEGIN
    IF config_id IS NULL OR source_table IS NULL OR id_column IS NULL OR output_table IS NULL THEN
        RAISE EXCEPTION 'predict needs config_id, source_table, id_column and output_table'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT d.num_segments, d.class_values INTO parts, classes
    FROM configs c JOIN workloads w USING (workload_id) JOIN datasets d ON d.name = w.dataset
    WHERE c.config_id = config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown config %', config_id USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM check_transfer_base(config_id);
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type
    FROM pg_attribute a WHERE a.attrelid = source_table AND a.attname = id_column AND a.attnum > 0
                          AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'id column % does not exist in %', quote_ident(id_column), source_table
            USING ERRCODE = 'undefined_column';
    END IF;
    IF id_column IN ('label', 'probabilities') THEN
        RAISE EXCEPTION 'id column % clashes with the output columns label and probabilities', id_column
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    label_type := CASE
        WHEN (SELECT bool_and(jsonb_typeof(v) = 'number' AND (v #>> '{}')::numeric % 1 = 0)
              FROM jsonb_array_elements(classes) v) THEN 'bigint'
        WHEN (SELECT bool_and(jsonb_typeof(v) = 'number') FROM jsonb_array_elements(classes) v) THEN 'float8'
        WHEN (SELECT bool_and(jsonb_typeof(v) = 'boolean') FROM jsonb_array_elements(classes) v) THEN 'boolean'
        ELSE 'text' END;
    target := parse_ident(output_table);
    IF cardinality(target) = 1 THEN
        target := ARRAY[(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE c.oid = source_table), target[1]];
    ELSIF cardinality(target) <> 2 THEN
        RAISE EXCEPTION 'output_table must be [schema.]table, got %', output_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- id_type and label_type are type names from the catalog or the list above, never user text.
    EXECUTE format('CREATE TABLE %I.%I (%I %s, label %s, probabilities real[])',
                   target[1], target[2], id_column, id_type, label_type);
    output_schema := target[1];
    output_name := target[2];
END
$$;

-- The rows are split by the hash of their id into as many parts as the dataset has segments,
-- one short PL/Python call each: here one after another, in the caller's transaction;
-- `cerebro-db predict` runs the parts on the segments side by side. Rows with a NULL id are
-- skipped. Returns the rows written.
CREATE OR REPLACE FUNCTION predict(config_id int, source_table regclass, id_column text, output_table text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    target record;
    total bigint := 0;
BEGIN
    SELECT * INTO target FROM _predict_begin(config_id, source_table, id_column, output_table);
    FOR part IN 0 .. target.parts - 1 LOOP
        total := total + raise_if_error(_predict_part(config_id, source_table::oid, id_column, target.output_schema,
                                                      target.output_name, part, target.parts))::bigint;
    END LOOP;
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION _export_model(config_id int, OUT outcome jsonb, OUT model bytea)
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.export_model(plpy, GD, config_id)
$$;

-- A .keras file of the config's latest state; its first layer applies the dataset's
-- normalization, so keras.saving.load_model(file).predict(raw features) gives predict's
-- probabilities.
CREATE OR REPLACE FUNCTION export_model(config_id int) RETURNS bytea
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    exported record;
BEGIN
    PERFORM check_transfer_base(config_id);
    SELECT * INTO exported FROM _export_model(config_id);
    PERFORM raise_if_error(exported.outcome);
    RETURN exported.model;
END
$$;
