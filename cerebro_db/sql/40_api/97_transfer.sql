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
-- configs_before_insert completed them (triggers fire in name order); the base's sha256 pinned in base_sha256
-- (check_transfer_base refuses the config's base once another is imported under its name). A clone pins the base
-- the name resolves to now: cloning is how a config moves onto a re-imported base.
CREATE OR REPLACE FUNCTION configs_transfer() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
DECLARE
    workload record;
    base jsonb;
BEGIN
    SELECT w.model, w.owner, d.feature_shape INTO workload
    FROM workloads w JOIN datasets d ON d.name = w.dataset WHERE w.workload_id = NEW.workload_id;
    NEW.base_sha256 := NULL;  -- only ever this trigger's: users cannot write the column
    IF FOUND AND workload.model = 'transfer' THEN
        base := transfer_base(NEW.params ->> 'base', workload.owner);
        NEW.params := raise_if_error(_transfer_params(NEW.params, workload.feature_shape, base));
        NEW.base_sha256 := base ->> 'sha256';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER configs_transfer
BEFORE INSERT ON configs FOR EACH ROW EXECUTE FUNCTION configs_transfer();

-- Refuses a transfer config whose base is not the one it was created on (configs.base_sha256): dropped, or
-- dropped and another model imported under its name, whose frozen weights would silently replace those the
-- config's trained part was trained on. Units (unit_context), evaluate, predict and export_model call it first.
-- Invoker rights: a user's evaluate sees the bases row-level security shows them (their own: their configs').
CREATE OR REPLACE FUNCTION check_transfer_base(config_id int) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    config record;
BEGIN
    SELECT c.params ->> 'base' AS base, c.base_sha256 AS pinned, m.sha256 AS current INTO config
    FROM configs c
    JOIN workloads w ON w.workload_id = c.workload_id
    LEFT JOIN imported_models m ON m.name = c.params ->> 'base'
    WHERE c.config_id = check_transfer_base.config_id AND w.model = 'transfer';
    IF FOUND AND config.current IS DISTINCT FROM config.pinned THEN
        RAISE EXCEPTION 'base % was % since config % was created; its frozen weights are not those the config '
                        'was trained with', quote_literal(config.base),
                        CASE WHEN config.current IS NULL THEN 'dropped'
                             ELSE format('re-imported (sha256 %s... now, %s... then)', left(config.current, 12),
                                         left(config.pinned, 12)) END,
                        config_id
            USING HINT = format('import the original again under %s (sha256 %s), or clone the config onto the new '
                                'base: SELECT clone_config(%s) keeps its trained part (the layers must match), '
                                'add_config starts afresh', quote_literal(config.base), config.pinned, config_id),
                  ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- The pending and running configs that fine-tune the base named base, whoever owns them (an admin's workload may
-- use a tenant's base): SECURITY DEFINER, so that drop_imported_model counts those row-level security hides.
-- Returns workload ids only for the caller's own workloads (others' are counted, not named).
CREATE OR REPLACE FUNCTION transfer_configs_using(base text, OUT own_workloads int[], OUT own_configs int,
                                                  OUT others_configs int)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = cerebro, pg_temp
AS $$
    SELECT array_agg(DISTINCT c.workload_id ORDER BY c.workload_id) FILTER (WHERE caller_owns(w.owner)),
           (count(*) FILTER (WHERE caller_owns(w.owner)))::int,
           (count(*) FILTER (WHERE NOT caller_owns(w.owner)))::int
    FROM configs c JOIN workloads w ON w.workload_id = c.workload_id
    WHERE w.model = 'transfer' AND c.params ->> 'base' = transfer_configs_using.base
      AND c.status IN ('pending', 'running')
$$;
