-- import_model: bring a pretrained Keras model into the database (a .keras archive, as model.save writes it).
-- Loaded in Keras' safe mode in a child process (plpy/cerebro_plpy/imported.py): no Lambda layers, no custom
-- classes, one input of a fixed shape. Any cerebro_user may import: safe mode runs no code of the archive.
--   SELECT import_model('fashion_cnn', pg_read_binary_file('/path/fashion_cnn.keras'), 'cnn on classes 0-4');
--   SELECT * FROM model_layers('fashion_cnn');
--   SELECT * FROM imported_model_catalog;
--   SELECT drop_imported_model('fashion_cnn');
-- From a client: cerebro-db import-model fashion_cnn fashion_cnn.keras --description '...'

-- The largest archive import_model takes: 512 MB, the largest base whose full fine-tuning (weights, gradients
-- and Adam's two slots: 4 times its size) fits the memory guard's default 4 GB (cerebro.max_training_mb) with
-- room left for activations, and which the check's child loads within its address space beside TensorFlow.
-- BERT-base (440 MB) fits; a larger base is better fine-tuned elsewhere.
CREATE OR REPLACE FUNCTION max_import_bytes() RETURNS bigint
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT 512::bigint * 1024 * 1024 $$;

-- Imported model names are unique across users (configs name their base by it, as workloads name their dataset),
-- but row-level security hides others' models: SECURITY DEFINER, so that a taken name is reported as such.
CREATE OR REPLACE FUNCTION imported_model_name_taken(name text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$ SELECT EXISTS (SELECT 1 FROM imported_models m WHERE m.name = imported_model_name_taken.name) $$;

-- A JSON array of dimensions as int[] (JSON null: NULL), in order.
CREATE OR REPLACE FUNCTION _dims(dims jsonb) RETURNS int[]
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT ARRAY(SELECT (d.dim #>> '{}')::int FROM jsonb_array_elements(dims) WITH ORDINALITY AS d (dim, i) ORDER BY d.i) $$;

-- {"result": {input_shape, output_shape, params, layers}} or the refusal {"error", "hint", "errcode"}.
CREATE OR REPLACE FUNCTION _describe_imported_model(keras_file bytea) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.describe_imported_model(keras_file)
$$;

-- SECURITY DEFINER: users cannot INSERT into imported_models (a row written by hand would carry an archive nobody
-- checked, or layers that lie); this function checks the archive first and stamps the caller as owner.
CREATE OR REPLACE FUNCTION import_model(name text, keras_file bytea, description text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    owner text := owner_of_new_rows();
    checked jsonb;
BEGIN
    IF name IS NULL OR keras_file IS NULL THEN
        RAISE EXCEPTION 'import_model needs a name and the bytes of a .keras file'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF btrim(name) = '' THEN
        RAISE EXCEPTION 'an imported model needs a non-empty name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(keras_file) = 0 THEN
        RAISE EXCEPTION 'the .keras file given for % is empty', quote_literal(name)
            USING HINT = 'pass the bytes of a file that model.save(''name.keras'') wrote',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(keras_file) > max_import_bytes() THEN
        RAISE EXCEPTION 'the .keras file given for % has % bytes, over the import limit of % (%)', quote_literal(name),
                        octet_length(keras_file), max_import_bytes(), pg_size_pretty(max_import_bytes())
            USING HINT = 'import a smaller model: the limit keeps a base within the memory guard''s default '
                         '(see max_import_bytes in the README, Importing a pretrained model)',
                  ERRCODE = 'program_limit_exceeded';
    END IF;
    IF imported_model_name_taken(name) THEN
        RAISE EXCEPTION 'an imported model named % exists already', quote_literal(name)
            USING HINT = 'import under another name, or drop yours first: SELECT drop_imported_model(name)',
                  ERRCODE = 'duplicate_object';
    END IF;
    checked := raise_if_error(_describe_imported_model(keras_file));
    BEGIN
        INSERT INTO imported_models (name, owner, description, keras_file, size_bytes, sha256, input_shape,
                                     output_shape, params, layers)
        VALUES (name, owner, description, keras_file, octet_length(keras_file), encode(sha256(keras_file), 'hex'),
                _dims(checked -> 'input_shape'), _dims(checked -> 'output_shape'), (checked ->> 'params')::bigint, checked -> 'layers');
    EXCEPTION WHEN unique_violation THEN  -- another import of the name committed while this one was checked
        RAISE EXCEPTION 'an imported model named % exists already', quote_literal(name)
            USING HINT = 'import under another name', ERRCODE = 'duplicate_object';
    END;
END
$$;

-- Invoker rights: row-level security lets a user drop only their own models (cerebro_admin: anyone's).
-- Refused while pending or running transfer configs fine-tune it (97_transfer.sql): their next unit would find no
-- base. The row is deleted (and locked) before they are counted; a config created by a transaction that read the
-- base before this one committed is refused at its first unit instead (check_transfer_base).
CREATE OR REPLACE FUNCTION drop_imported_model(name text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    used record;
BEGIN
    DELETE FROM imported_models m WHERE m.name = name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown imported model %', quote_literal(coalesce(name, 'NULL'))
            USING HINT = 'SELECT name FROM imported_model_catalog lists the models you can drop',
                  ERRCODE = 'undefined_object';
    END IF;
    used := transfer_configs_using(name);
    IF used.own_configs + used.others_configs > 0 THEN
        RAISE EXCEPTION 'imported model % is the base of % pending or running configs (%)', quote_literal(name),
                        used.own_configs + used.others_configs,
                        concat_ws(', ', 'your workloads ' || array_to_string(used.own_workloads, ', '),
                                  nullif(used.others_configs, 0) || ' of other users'' workloads')
            USING HINT = CASE WHEN used.own_configs > 0 THEN format(
                             'let them finish, or stop them first: UPDATE workloads SET status = ''stopped'' WHERE '
                             'workload_id IN (%s); then drop it', array_to_string(used.own_workloads, ', '))
                         ELSE 'their owners must let them finish or stop them first' END,
                  ERRCODE = 'object_in_use';
    END IF;
END
$$;

-- One row per layer of model.layers, in order, as import_model found them (no TensorFlow is imported to read
-- them); a nested model is followed by its own layers, named by their path (outer/inner), and its params count
-- theirs. Invoker rights: someone else's model is unknown.
CREATE OR REPLACE FUNCTION model_layers(model text)
RETURNS TABLE (index int, name text, class text, output_shape text, params bigint, trainable boolean)
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    stored jsonb;
BEGIN
    SELECT m.layers INTO stored FROM imported_models m WHERE m.name = model_layers.model;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown imported model %', quote_literal(coalesce(model, 'NULL'))
            USING HINT = 'SELECT name FROM imported_model_catalog lists yours; import_model adds one',
                  ERRCODE = 'undefined_object';
    END IF;
    RETURN QUERY
    SELECT (l.ordinality - 1)::int, l.layer ->> 'name', l.layer ->> 'class', l.layer ->> 'output_shape',
           (l.layer ->> 'params')::bigint, (l.layer ->> 'trainable')::boolean
    FROM jsonb_array_elements(stored) WITH ORDINALITY AS l (layer, ordinality)
    ORDER BY l.ordinality;
END
$$;

-- The imported models a user may see, with their sizes (not the archives' bytes).
CREATE OR REPLACE VIEW imported_model_catalog WITH (security_invoker = true) AS
SELECT m.name,
       m.owner,
       m.description,
       m.input_shape,
       m.output_shape,
       jsonb_array_length(m.layers) AS layers,
       m.params,
       m.size_bytes,
       pg_size_pretty(m.size_bytes) AS size,
       m.sha256,
       m.created_at
FROM imported_models m
ORDER BY m.name;
