-- Fine-tuning an imported model (import_model, 96_import_model.sql): the roster model 'transfer'
-- (plpy/cerebro_plpy/transfer.py). Its params name the base, the layer whose output feeds a new head and the
-- lowest layer trained; they are checked against what import_model stored about the base (no TensorFlow):
--   SELECT run_model_selection('fashion_5_9', 'transfer',
--       '{"base": "fashion_cnn", "layer": ["cnn/flatten", "cnn/dense"], "trainable_from": "", "lr": 0.001}');
-- A workload fine-tunes only bases its owner may see (their own; an admin: any), whoever inserts its configs.

-- The base named `base` as a workload of `owner` may use it (NULL if unknown to them): what the checks read.
-- Invoker rights: a user calling it sees no more than row-level security shows them.
CREATE OR REPLACE FUNCTION transfer_base(base text, owner text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT jsonb_build_object('name', m.name, 'sha256', m.sha256, 'input_shape', to_jsonb(m.input_shape),
                              'layers', m.layers)
    FROM imported_models m
    WHERE m.name = transfer_base.base
      AND (m.owner = transfer_base.owner OR pg_has_role(transfer_base.owner, 'cerebro_admin', 'USAGE'))
$$;

-- {"result": params with layer resolved} or the refusal: an unknown base, one of another input shape than the
-- dataset's features, an unknown layer or trainable_from, trainable_from after layer.
CREATE OR REPLACE FUNCTION _transfer_params(params jsonb, feature_shape int[], base jsonb) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.transfer_params(params, feature_shape, base)
$$;

-- {"result": null} if every base, layer and trainable_from the search space combines is usable.
CREATE OR REPLACE FUNCTION _check_transfer_space(search_space jsonb, feature_shape int[], bases jsonb) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.check_transfer_space(search_space, feature_shape, bases)
$$;

-- A new transfer workload: its search space combines only usable bases and layers, so that no procedure
-- (hyperopt's suggestions, hyperband's rungs) ever proposes a config that would be refused during a hop.
-- Fires inside the SECURITY DEFINER _create_workload: transfer_base's owner rule, not row-level security, decides.
CREATE OR REPLACE FUNCTION workloads_transfer() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    PERFORM raise_if_error(_check_transfer_space(
        NEW.search_space,
        (SELECT d.feature_shape FROM datasets d WHERE d.name = NEW.dataset),
        (SELECT coalesce(jsonb_object_agg(m.name, transfer_base(m.name, NEW.owner)), '{}')
         FROM imported_models m
         WHERE coalesce(NEW.search_space -> 'base' -> 'choices', NEW.search_space -> 'base') @> to_jsonb(m.name)
           AND transfer_base(m.name, NEW.owner) IS NOT NULL)));
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER workloads_transfer
BEFORE INSERT ON workloads FOR EACH ROW WHEN (NEW.model = 'transfer') EXECUTE FUNCTION workloads_transfer();

-- A new config of a transfer workload (run_model_selection, add_config, INSERT, clone_config, procedures): its
-- params checked against the base and its layer resolved (''= the layer before the classifier), after
-- configs_before_insert completed them (triggers fire in name order).
CREATE OR REPLACE FUNCTION configs_transfer() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    workload record;
BEGIN
    SELECT w.model, w.owner, d.feature_shape INTO workload
    FROM workloads w JOIN datasets d ON d.name = w.dataset WHERE w.workload_id = NEW.workload_id;
    IF FOUND AND workload.model = 'transfer' THEN
        NEW.params := raise_if_error(_transfer_params(NEW.params, workload.feature_shape,
                                                      transfer_base(NEW.params ->> 'base', workload.owner)));
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_transfer
BEFORE INSERT ON configs FOR EACH ROW EXECUTE FUNCTION configs_transfer();
