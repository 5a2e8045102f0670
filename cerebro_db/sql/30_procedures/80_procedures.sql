-- Procedures observe each finished epoch (called by record_hop in the unit's transaction) and
-- act as the system: hyperband prunes losing configs at rungs (config_transition, 20_status/),
-- hyperopt adds configs TPE suggests. They never run units themselves. Then, whatever the
-- procedure, the suggestions for the user are made (90_suggestions.sql).

-- ASHA-style successive halving with reduction factor 3 and rungs at epochs 1, 3, 9, ...
-- A config that reaches a rung must be in the top third of the configs that reached it
-- (once at least 3 have); otherwise it is stopped (config_events kind 'pruned'). A user may
-- resume it: a config that was pruned once is never pruned again (human override wins). A
-- user's own stop and resume is no prune: the config stays subject to the rungs.
CREATE OR REPLACE FUNCTION hyperband_rung_factor() RETURNS int
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT 3 $$;

-- Where a config stands at the end of its epoch, by the rung rule: whether the epoch is a rung (a
-- power of eta below the config's max_epochs), how many of the workload's configs reached it, how
-- many of those did better, and how many the rung keeps (the top 1/eta, at least 1). It loses the
-- rung when at least eta reached it and keep or more did better. Hyperband prunes on it, and so does
-- an autopilot whose budget cannot finish its configs (95_autonomy.sql).
CREATE OR REPLACE FUNCTION rung_standing(
    config_id int, epoch int, OUT rung boolean, OUT val_metric float8, OUT reached int, OUT better int, OUT keep int,
    OUT loses boolean
)
LANGUAGE plpgsql STABLE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    eta int := hyperband_rung_factor();
    this record;
    power int := 1;
BEGIN
    SELECT c.workload_id, c.max_epochs, m.val_metric AS val INTO this
    FROM configs c JOIN epoch_metrics m USING (config_id)
    WHERE c.config_id = rung_standing.config_id AND m.epoch = rung_standing.epoch;
    WHILE power < epoch LOOP
        power := power * eta;
    END LOOP;
    rung := power = epoch AND epoch < this.max_epochs;
    val_metric := this.val;
    SELECT count(*), count(*) FILTER (WHERE m.val_metric > this.val) INTO reached, better
    FROM configs c JOIN epoch_metrics m USING (config_id)
    WHERE c.workload_id = this.workload_id AND m.epoch = rung_standing.epoch;
    keep := greatest(1, reached / eta);
    loses := rung AND reached >= eta AND better >= keep;
END
$$;

CREATE OR REPLACE FUNCTION hyperband_observe(config_id int, epoch int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    standing record;
BEGIN
    IF EXISTS (SELECT 1 FROM config_events e WHERE e.config_id = hyperband_observe.config_id AND e.kind = 'pruned') THEN
        RETURN;
    END IF;
    SELECT * INTO standing FROM rung_standing(config_id, epoch);
    IF standing.loses THEN
        PERFORM config_transition(config_id, 'prune', format(
            'hyperband: val metric %s at epoch %s is not in the top %s of %s configs at this rung',
            round(standing.val_metric::numeric, 4), epoch, standing.keep, standing.reached));
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION _tpe_suggest(
    model text, search_space jsonb, history jsonb, count int, seed int, feature_shape int[], startup int,
    registered boolean
) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.tpe_suggest(model, search_space, history, count, seed, feature_shape, startup, registered)
$$;

-- TPE keeps one config per segment in flight until the workload has num_configs configs.
-- Its study is rebuilt from the tables every time: each config with its best validation
-- metric so far (or none yet), whoever created it.
CREATE OR REPLACE FUNCTION hyperopt_observe(workload_id int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    w record;
    total int;
    active int;
    wanted int;
    history jsonb;
BEGIN
    SELECT wl.model, wl.search_space, wl.num_configs, wl.seed, wl.owner, d.feature_shape INTO w
    FROM workloads wl JOIN datasets d ON d.name = wl.dataset
    WHERE wl.workload_id = hyperopt_observe.workload_id;
    SELECT count(*), count(*) FILTER (WHERE c.status IN ('pending', 'running')) INTO total, active
    FROM configs c WHERE c.workload_id = hyperopt_observe.workload_id;
    -- Within the owner's headroom (max_active_configs): a suggestion is never refused.
    wanted := least(w.num_configs - total, (SELECT count(*)::int FROM segments) - active,
                    (SELECT l.max_active_configs FROM role_limits(w.owner) l) - active_configs(w.owner));
    IF wanted <= 0 THEN
        RETURN;
    END IF;
    SELECT jsonb_agg(jsonb_build_array(l.params, l.best_val_metric)) INTO history
    FROM leaderboard l WHERE l.workload_id = hyperopt_observe.workload_id;
    INSERT INTO configs (workload_id, params, seed, event_detail)
    SELECT hyperopt_observe.workload_id, p.value, derived_seed(w.seed, total + p.k),
           'suggested by hyperopt (TPE)'
    FROM jsonb_array_elements(raise_if_error(_tpe_suggest(
        w.model, w.search_space, history, wanted, derived_seed(w.seed, total), w.feature_shape,
        (SELECT count(*)::int FROM segments), is_registered_model(w.model)))) WITH ORDINALITY AS p(value, k);
END
$$;

CREATE OR REPLACE FUNCTION on_epoch_end(config_id int, epoch int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    workload record;
    was_internal text := coalesce(current_setting('cerebro.internal', true), '');
BEGIN
    SELECT w.workload_id, w.procedure INTO workload
    FROM configs c JOIN workloads w USING (workload_id) WHERE c.config_id = on_epoch_end.config_id;
    -- The procedures' configs are the system's (no user's quota check, the reason kept in the log).
    PERFORM set_config('cerebro.internal', 'on', true);
    -- Decisions (the procedure's, the suggestions') read what other units committed: one at a time
    -- per workload, and each statement after the lock sees the previous decision.
    PERFORM pg_advisory_xact_lock(procedure_lock_key(), workload.workload_id);
    IF workload.procedure = 'hyperband' THEN
        PERFORM hyperband_observe(config_id, epoch);
    ELSIF workload.procedure = 'hyperopt' THEN
        PERFORM hyperopt_observe(workload.workload_id);
    END IF;
    -- Advice never fails a unit: a suggestion that cannot be made is logged and left out.
    BEGIN
        PERFORM suggest_observe(config_id, epoch);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'no suggestions for config % at epoch %: %', config_id, epoch, SQLERRM;
    END;
    -- Cruise control and autopilot accept some of them (95_autonomy.sql); nor does that fail a unit.
    BEGIN
        PERFORM autonomy_observe(config_id);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'no autonomy for config % at epoch %: %', config_id, epoch, SQLERRM;
    END;
    PERFORM set_config('cerebro.internal', was_internal, true);
END
$$;
