-- register_model: store a custom Keras script after checking that it builds a working
-- compiled model (see plpy/cerebro_plpy/custom.py for the contract). Admin only: the
-- script runs as the database server.
--   SELECT register_model('tiny', $py$
--   import keras
--   def create_model(params):
--       model = keras.Sequential([keras.Input(params["input_shape"]), keras.layers.Flatten(),
--                                 keras.layers.Dense(params["num_classes"], activation="softmax")])
--       model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
--       return model
--   $py$);
--   SELECT run_model_selection('fashion', 'tiny', '{"lr": [0.001, 0.01]}');

-- Whether model names a registered script rather than a roster model.
CREATE OR REPLACE FUNCTION is_registered_model(model text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$ SELECT EXISTS (SELECT 1 FROM registered_models r WHERE r.name = is_registered_model.model) $$;

CREATE OR REPLACE FUNCTION _check_model_script(name text, source text, entry_point text) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.check_model_script(GD, name, source, entry_point)
$$;

-- SECURITY DEFINER, executable by cerebro_admin only (99_privileges.sql): the check runs the
-- script, and registered_models and its audit, model_registrations, are written by nobody else.
-- cerebro_admin is thus superuser-equivalent: the script runs as the server's own Python with the
-- schema owner's rights, here and later in the scheduler's backends (see README, Users and tenancy).
CREATE OR REPLACE FUNCTION register_model(name text, source text, entry_point text DEFAULT 'create_model')
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    checked jsonb;
BEGIN
    IF name IS NULL OR source IS NULL OR entry_point IS NULL THEN
        RAISE EXCEPTION 'register_model needs name, source and entry_point' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF is_registered_model(name) THEN
        RAISE EXCEPTION 'model % is already registered', quote_literal(name)
            USING HINT = 'register the new version under another name (units build the script registered as the workload''s model)',
                  ERRCODE = 'duplicate_object';
    END IF;
    checked := raise_if_error(_check_model_script(name, source, entry_point));
    INSERT INTO registered_models (name, source, entry_point, source_sha256, owner)
    VALUES (name, source, entry_point, checked ->> 'source_sha256', acting_role());
    -- The audit, after the check: the script has run by now and cannot touch its own row in this call.
    INSERT INTO model_registrations (name, entry_point, source_sha256, registered_by, session_role, client_addr)
    VALUES (name, entry_point, checked ->> 'source_sha256', acting_role(), session_user, inet_client_addr()::text);
    RAISE LOG 'cerebro: % registered model % (sha256 %)', acting_role(), quote_literal(name), checked ->> 'source_sha256';
END
$$;
