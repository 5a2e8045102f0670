-- Suggestions: at each epoch's end the system reads the curves and proposes steering actions with a
-- reason, the evidence and the SQL that carries each out (suggestion_log; the view suggestions in
-- 40_api/80_suggestions.sql lists the live ones, accept_suggestion / dismiss_suggestion resolve them).
-- Made here, at the epoch's end, into a table rather than computed by the view on every read: the
-- dashboard polls the view, and a workload of hundreds of configs would otherwise have every curve
-- re-read per poll; here each epoch reads one config's last epochs, the field at that epoch and one
-- pass over the workload's epoch-to-epoch changes (the noise). The system only suggests: nothing here
-- changes a config.

-- What each kind carries out when accepted (NULL: a warning to read, only dismissed) and whether that
-- loses nothing (a clone, more epochs, a new workload) or ends training (a stop): the autonomy levels
-- accept the non-destructive ones on their own.
CREATE OR REPLACE VIEW suggestion_kinds WITH (security_invoker = true) AS
SELECT * FROM (VALUES
    ('stop', 'action', 'stop', false,
     'trails the best config at the same epoch by more than the workload''s noise margin, and its curve has flattened'),
    ('clone_lower_lr', 'action', 'clone', true, 'its training loss swings or rises: a clone from its weights, lr / 3'),
    ('clone_higher_lr', 'action', 'clone', true,
     'its training loss falls every epoch but crawls, and it trails the best: a clone from its weights, lr * 3'),
    ('extend', 'action', 'extend', true, 'the best config finished its epochs still improving: more epochs'),
    ('resume', 'action', 'resume', true,
     'a stopped config that ranks in the top at its epoch now that more reached it'),
    ('drill_down', 'action', 'run_model_selection', true,
     'a new workload searching around the top configs, warm-started from their weights'),
    ('divergence', 'warning', 'stop', false, 'its training loss climbs fast: it is likely to fail (NaN) soon'),
    ('overfitting', 'warning', 'stop', false,
     'its validation loss rises while its training loss falls, and its validation metric no longer improves'),
    ('leakage', 'warning', NULL, NULL,
     'validation better than training for many epochs, or near perfect: rows may be shared between the splits'),
    ('dataset_too_small', 'warning', NULL, NULL,
     'a segment''s share of the training rows is smaller than a batch: each hop trains one partial step')
) AS k(kind, category, carries_out, non_destructive, description);

-- The thresholds, in one place (SELECT * FROM suggestion_thresholds()), each with why.
CREATE OR REPLACE FUNCTION suggestion_thresholds(
    -- 3: a curve's slope is read over its last 3 epochs: the fewest that say more than one step's
    -- noise, and few enough that a change shows within 3 epochs. Swings and crawls read the 3 steps
    -- between its last 4.
    OUT curve_window int,
    -- hyperband's rung factor (3): a config is compared with the best at an epoch only once as many
    -- configs reached that epoch as a hyperband rung needs to decide.
    OUT configs_at_epoch int,
    -- 2: the margin is twice the workload's one-epoch noise: a gap that wide is rarely noise
    -- (about 1 in 20 for normal noise).
    OUT margin_noises float8,
    -- 0.005: the noise's floor (half a point of accuracy): a validation set of a few hundred rows
    -- resolves no finer, and a few near-identical curves would make any gap look significant.
    OUT min_noise float8,
    -- 0.01: a training-loss step under 1% of the loss is jitter, neither a rise nor a swing.
    OUT loss_jitter float8,
    -- 0.02: a training loss that falls every epoch but by less than 2% of itself crawls.
    OUT crawl_rate float8,
    -- 3: half an order of magnitude, the usual step of an lr grid (1e-3, 3e-3, 1e-2).
    OUT lr_factor float8,
    -- 1.5: a training loss half again above its own lowest is climbing out of its minimum; a
    -- non-finite loss, which fails the config, usually follows within epochs.
    OUT divergence_ratio float8,
    -- 0.05: a validation loss 5% above its lowest, rising while the training loss falls, is beyond
    -- noise.
    OUT overfit_rise float8,
    -- 5: validation ahead of training (by the margin) is normal for an epoch or two (dropout, the
    -- training metric being the epoch's running average); for 5 running it is suspicious.
    OUT leakage_epochs int,
    -- 0.999: validation this near perfect is rarer than rows leaked between the splits.
    OUT near_perfect float8,
    -- 0.5: extend by half the config's budget: enough epochs to see where a rising curve flattens.
    OUT extend_fraction float8,
    -- 2: drill down around the top 2 configs, with 4 random configs (the dashboard's defaults).
    OUT drill_top int,
    OUT drill_configs int
)
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT 3, hyperband_rung_factor(), 2.0::float8, 0.005::float8, 0.01::float8, 0.02::float8, 3.0::float8,
             1.5::float8, 0.05::float8, 5, 0.999::float8, 0.5::float8, 2, 4 $$;

-- A number for the evidence: rounded (it is read by people), NaN and infinities as text (jsonb has none).
CREATE OR REPLACE FUNCTION _evidence_number(value float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT CASE WHEN value IS NULL THEN 'null'::jsonb
                WHEN value > '-Infinity' AND value < 'Infinity' THEN to_jsonb(round(value::numeric, 6))
                ELSE to_jsonb(value::text) END
$$;

-- A number in a reason: four decimals, NaN and infinities as they are.
CREATE OR REPLACE FUNCTION _shown(value float8) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT CASE WHEN value > '-Infinity' AND value < 'Infinity' THEN round(value::numeric, 4)::text
                ELSE value::text END
$$;

-- A suggested lr: three significant digits, as a user would type it.
CREATE OR REPLACE FUNCTION _three_digits(value float8) RETURNS float8
LANGUAGE sql IMMUTABLE SET search_path = cerebro, pg_temp
AS $$ SELECT round(value::numeric, 2 - floor(log(value::numeric))::int)::float8 $$;

-- The workload's noise: the spread of its configs' epoch-to-epoch changes of the validation metric,
-- as a robust standard deviation (1.4826 x the median absolute deviation: a few large early steps or
-- a diverging config do not inflate it), floored at min_noise. Non-finite metrics are left out.
CREATE OR REPLACE FUNCTION workload_noise(workload_id int) RETURNS float8
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    WITH steps AS (
        SELECT m.val_metric - lag(m.val_metric) OVER (PARTITION BY m.config_id ORDER BY m.epoch) AS step
        FROM epoch_metrics m JOIN configs c USING (config_id)
        WHERE c.workload_id = workload_noise.workload_id AND m.val_metric > '-Infinity' AND m.val_metric < 'Infinity'
    ), middle AS (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s.step) AS median FROM steps s WHERE s.step IS NOT NULL
    )
    SELECT greatest((SELECT t.min_noise FROM suggestion_thresholds() t),
                    coalesce(1.4826 * percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(s.step - middle.median)), 0))
    FROM steps s, middle
    WHERE s.step IS NOT NULL
$$;

-- One config's curve as the rules read it: its last epoch's numbers, slopes over the last
-- curve_window epochs, the direction of each of its last curve_window training-loss steps (up, down,
-- or jitter), its lowest losses, and for how many of its last leakage_epochs epochs validation beat
-- training by more than margin.
CREATE OR REPLACE FUNCTION config_curve(config_id int, margin float8)
RETURNS TABLE (epochs int, val_metric float8, val_loss float8, train_loss float8, best_val_metric float8,
               val_slope float8, val_loss_slope float8, train_loss_slope float8, window_train_loss float8,
               rises int, falls int, swings int, fall_rate float8, min_train_loss float8, min_val_loss float8,
               val_ahead int)
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    WITH t AS (SELECT * FROM suggestion_thresholds()),
    curve AS (
        SELECT m.epoch, m.val_metric, m.val_loss, m.train_loss, m.train_metric,
               row_number() OVER (ORDER BY m.epoch DESC) AS back,
               lag(m.train_loss) OVER (ORDER BY m.epoch) AS before
        FROM epoch_metrics m WHERE m.config_id = config_curve.config_id
    ), steps AS (
        SELECT c.*, CASE WHEN c.train_loss - c.before > t.loss_jitter * c.before THEN 1
                         WHEN c.before - c.train_loss > t.loss_jitter * c.before THEN -1
                         ELSE 0 END AS direction
        FROM curve c, t
    ), turns AS (
        SELECT s.*, s.direction * lag(s.direction) OVER (ORDER BY s.epoch) AS turn FROM steps s, t
        WHERE s.back <= t.curve_window AND s.before IS NOT NULL
    )
    SELECT count(*)::int,
           max(s.val_metric) FILTER (WHERE s.back = 1),
           max(s.val_loss) FILTER (WHERE s.back = 1),
           max(s.train_loss) FILTER (WHERE s.back = 1),
           max(s.val_metric) FILTER (WHERE s.val_metric < 'Infinity'),
           regr_slope(s.val_metric, s.epoch) FILTER (WHERE s.back <= t.curve_window),
           regr_slope(s.val_loss, s.epoch) FILTER (WHERE s.back <= t.curve_window),
           regr_slope(s.train_loss, s.epoch) FILTER (WHERE s.back <= t.curve_window),
           max(s.train_loss) FILTER (WHERE s.back = t.curve_window),
           count(*) FILTER (WHERE s.back <= t.curve_window AND s.before IS NOT NULL AND s.direction = 1)::int,
           count(*) FILTER (WHERE s.back <= t.curve_window AND s.before IS NOT NULL AND s.train_loss < s.before)::int,
           (SELECT count(*) FROM turns WHERE turns.turn = -1)::int,
           (max(s.train_loss) FILTER (WHERE s.back = t.curve_window + 1) - max(s.train_loss) FILTER (WHERE s.back = 1))
               / nullif(max(s.train_loss) FILTER (WHERE s.back = t.curve_window + 1), 0) / t.curve_window,
           min(s.train_loss) FILTER (WHERE s.train_loss < 'Infinity'),
           min(s.val_loss) FILTER (WHERE s.val_loss < 'Infinity'),
           count(*) FILTER (WHERE s.back <= t.leakage_epochs AND s.val_metric > s.train_metric + margin)::int
    FROM steps s, t
    GROUP BY t.curve_window, t.leakage_epochs
$$;

-- Whether the user already answered a suggestion of this kind: a config's, accepted or dismissed
-- since its last status change (a stop, resume, completion... opens it again); a workload's, ever.
CREATE OR REPLACE FUNCTION suggestion_repeat_blocked(workload_id int, config_id int, kind text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM suggestion_log s
        WHERE s.workload_id = suggestion_repeat_blocked.workload_id AND s.kind = suggestion_repeat_blocked.kind
          AND s.config_id IS NOT DISTINCT FROM suggestion_repeat_blocked.config_id
          AND s.resolution IN ('accepted', 'dismissed')
          AND s.resolved_at > coalesce((SELECT max(e.at) FROM config_events e
                                        WHERE e.config_id = suggestion_repeat_blocked.config_id
                                          AND e.kind NOT IN ('max_epochs', 'accepted', 'declined')), '-infinity'))
$$;

-- The statement a user would type to carry the suggestion out (accept_suggestion does the same, from
-- the same action).
CREATE OR REPLACE FUNCTION suggestion_sql(kind text, config_id int, action jsonb) RETURNS text
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT CASE k.carries_out
        WHEN 'stop' THEN format('UPDATE configs SET status = %L WHERE config_id = %s', 'stopped', config_id)
        WHEN 'resume' THEN format('UPDATE configs SET status = %L WHERE config_id = %s', 'running', config_id)
        WHEN 'extend' THEN format('UPDATE configs SET max_epochs = %s, status = %L WHERE config_id = %s',
                                  (action ->> 'max_epochs')::int, 'running', config_id)
        WHEN 'clone' THEN format('SELECT clone_config(%s, %L)', config_id, action -> 'overrides')
        WHEN 'run_model_selection' THEN format(
            'SELECT run_model_selection(%L, %L, %L, procedure => %L, num_configs => %s, max_epochs => %s, name => %L,'
            ' parent_workload => %s, warm_start => true)',
            action ->> 'dataset', action ->> 'model', action -> 'search_space', action ->> 'procedure',
            (action ->> 'num_configs')::int, (action ->> 'max_epochs')::int, action ->> 'name',
            (action ->> 'parent_workload')::int)
        END
    FROM suggestion_kinds k WHERE k.kind = suggestion_sql.kind
$$;

-- Whether open suggestion s still applies to ``config`` (its config's row now; NULL for a workload's): a
-- warning with nothing to carry out stays until dismissed, a workload's is not tied to a config, and
-- one that acts on a config is stale once the config's epochs_done, status or max_epochs differ from
-- when it was made. The view suggestions, accepting one and the autonomy levels all ask this.
-- No SET search_path: a function with one is never inlined, and the view would call it once per row
-- (10x slower on 30k suggestions). Its body names no table and no function, only its arguments' fields
-- and built-in operators, which pg_catalog resolves first.
CREATE OR REPLACE FUNCTION suggestion_is_live(s suggestion_log, config configs) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT s.action IS NULL OR s.config_id IS NULL
           OR coalesce((config.epochs_done, config.status, config.max_epochs)
                       = (s.config_epochs_done, s.config_status, s.config_max_epochs), false)
$$;

-- Records a suggestion as the system, unless the user answered this kind already
-- (suggestion_repeat_blocked) or the same one is still live: a config's of the same kind for the
-- config as it is now (a warning with nothing to carry out: any still open), a workload's with the
-- same action (a workload's other open one of the kind is superseded: a new top for drill_down).
CREATE OR REPLACE FUNCTION add_suggestion(workload_id int, config_id int, kind text, reason text, evidence jsonb,
                                          expected_effect text, action jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    config configs;
BEGIN
    IF suggestion_repeat_blocked(workload_id, config_id, kind) THEN
        RETURN;
    END IF;
    SELECT c.* INTO config FROM configs c WHERE c.config_id = add_suggestion.config_id;
    IF EXISTS (SELECT 1 FROM suggestion_log s
               WHERE s.workload_id = add_suggestion.workload_id AND s.kind = add_suggestion.kind
                 AND s.config_id IS NOT DISTINCT FROM add_suggestion.config_id AND s.resolution IS NULL
                 AND CASE WHEN add_suggestion.config_id IS NULL THEN s.action IS NOT DISTINCT FROM add_suggestion.action
                          ELSE suggestion_is_live(s, config) END) THEN
        RETURN;
    END IF;
    IF config_id IS NULL THEN
        UPDATE suggestion_log s SET resolution = 'superseded', resolved_by = 'cerebro', resolved_at = clock_timestamp()
        WHERE s.workload_id = add_suggestion.workload_id AND s.kind = add_suggestion.kind AND s.config_id IS NULL
          AND s.resolution IS NULL;
    END IF;
    INSERT INTO suggestion_log (workload_id, config_id, kind, reason, evidence, expected_effect, action, sql,
                                config_epochs_done, config_status, config_max_epochs)
    VALUES (workload_id, config_id, kind, reason, evidence, expected_effect, action,
            suggestion_sql(kind, config_id, action), config.epochs_done, config.status, config.max_epochs);
END
$$;

-- A config's own suggestions at the end of its epoch: read from its curve (config_curve) and the
-- field at that epoch (the configs that reached it, as a hyperband rung compares them).
CREATE OR REPLACE FUNCTION suggest_for_config(config_id int, epoch int, noise float8) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    t record := suggestion_thresholds();
    margin float8 := t.margin_noises * noise;
    c record;
    curve record;
    field record;
    gap float8;
    lr float8;
    active boolean;
    dominated boolean;
    flat boolean;
    crawling boolean;
    diverging boolean;
    clone_epochs jsonb;
    extended int;
BEGIN
    SELECT cf.workload_id, cf.params, cf.status, cf.epochs_done, cf.max_epochs, w.owner, w.max_epochs AS workload_epochs
    INTO c FROM configs cf JOIN workloads w USING (workload_id) WHERE cf.config_id = suggest_for_config.config_id;
    SELECT * INTO curve FROM config_curve(config_id, margin);
    IF curve.epochs IS NULL OR curve.epochs = 0 THEN
        RETURN;
    END IF;
    SELECT count(*) AS reached, max(m.val_metric) AS best,
           (array_agg(m.config_id ORDER BY m.val_metric DESC, m.config_id))[1] AS best_config
    INTO field
    FROM epoch_metrics m JOIN configs o USING (config_id)
    WHERE o.workload_id = c.workload_id AND m.epoch = suggest_for_config.epoch AND m.val_metric < 'Infinity';
    gap := field.best - curve.val_metric;
    active := c.status IN ('pending', 'running');
    lr := CASE WHEN jsonb_typeof(c.params -> 'lr') = 'number' THEN (c.params ->> 'lr')::float8 END;
    dominated := field.reached >= t.configs_at_epoch AND gap > margin;
    -- Flat: over the window its validation metric moved less than one epoch's noise.
    flat := curve.epochs >= t.curve_window AND curve.val_slope * (t.curve_window - 1) < noise;
    crawling := curve.falls = t.curve_window AND curve.fall_rate < t.crawl_rate;
    diverging := NOT (curve.train_loss < 'Infinity' AND curve.val_loss < 'Infinity')
                 OR curve.train_loss > t.divergence_ratio * curve.min_train_loss;
    -- A clone continues at its source's epochs: a finished source's clone needs more (as the dashboard's Clone form).
    clone_epochs := CASE WHEN c.epochs_done >= c.max_epochs
                         THEN jsonb_build_object('max_epochs', c.epochs_done + c.workload_epochs) ELSE '{}' END;

    IF active AND diverging THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'divergence',
            format('training loss %s is %s x its lowest (%s): it is diverging', _shown(curve.train_loss),
                   _shown(curve.train_loss / curve.min_train_loss), _shown(curve.min_train_loss)),
            jsonb_build_object('epoch', epoch, 'train_loss', _evidence_number(curve.train_loss),
                               'min_train_loss', _evidence_number(curve.min_train_loss),
                               'val_loss', _evidence_number(curve.val_loss), 'ratio', t.divergence_ratio, 'lr', lr),
            'stops it before a non-finite loss fails it; add a config with a lower lr rather than clone these weights',
            '{}');
    ELSIF lr IS NOT NULL AND curve.epochs > t.curve_window
          AND (curve.swings >= t.curve_window - 1 OR curve.train_loss > (1 + t.loss_jitter) * curve.window_train_loss)
    THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'clone_lower_lr',
            CASE WHEN curve.swings >= t.curve_window - 1
                 THEN format('training loss swung up and down over its last %s epochs (lr %s)', t.curve_window, lr)
                 ELSE format('training loss rose from %s to %s over its last %s epochs (lr %s)',
                             _shown(curve.window_train_loss), _shown(curve.train_loss),
                             t.curve_window, lr) END,
            jsonb_build_object('epoch', epoch, 'lr', lr, 'swings', curve.swings, 'rises', curve.rises,
                               'train_loss', _evidence_number(curve.train_loss),
                               'train_loss_slope', _evidence_number(curve.train_loss_slope)),
            format('a clone continues from its weights with steps %s times smaller; it keeps training unless stopped',
                   t.lr_factor),
            jsonb_build_object('overrides',
                               jsonb_build_object('lr', _three_digits(greatest(lr / t.lr_factor, 1e-12)))
                               || clone_epochs));
    END IF;

    IF lr IS NOT NULL AND NOT diverging AND dominated AND crawling THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'clone_higher_lr',
            format('training loss falls only %s%% an epoch (lr %s) and it trails config %s by %s at epoch %s',
                   _shown(100 * curve.fall_rate), lr, field.best_config, _shown(gap), epoch),
            jsonb_build_object('epoch', epoch, 'lr', lr, 'fall_rate', _evidence_number(curve.fall_rate),
                               'gap', _evidence_number(gap), 'margin', _evidence_number(margin),
                               'best_config', field.best_config),
            format('a clone continues from its weights with steps %s times larger, to catch up faster', t.lr_factor),
            jsonb_build_object('overrides',
                               jsonb_build_object('lr', _three_digits(least(lr * t.lr_factor, 10))) || clone_epochs));
    ELSIF active AND dominated AND flat AND NOT EXISTS (
        -- Human override wins, as with hyperband: a config its user resumed after a stop or prune.
        SELECT 1 FROM config_events r
        WHERE r.config_id = suggest_for_config.config_id AND r.kind = 'running' AND r.actor <> 'cerebro'
          AND EXISTS (SELECT 1 FROM config_events s WHERE s.config_id = r.config_id AND s.kind IN ('stopped', 'pruned')
                                                      AND s.event_id < r.event_id))
    THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'stop',
            format('at epoch %s it trails config %s by %s (margin %s) and its last %s validation points are flat',
                   epoch, field.best_config, _shown(gap), _shown(margin), t.curve_window),
            jsonb_build_object('epoch', epoch, 'val_metric', _evidence_number(curve.val_metric),
                               'best_val_metric', _evidence_number(field.best), 'best_config', field.best_config,
                               'gap', _evidence_number(gap), 'margin', _evidence_number(margin),
                               'noise', _evidence_number(noise), 'val_slope', _evidence_number(curve.val_slope),
                               'configs_at_epoch', field.reached),
            format('frees its %s remaining epochs for the configs ahead; it can be resumed later',
                   c.max_epochs - c.epochs_done),
            '{}');
    END IF;

    -- Only once the validation metric is flat too: a rising validation loss with a metric still
    -- climbing (confidence lost on rows already wrong) costs nothing that selection measures, and a
    -- stop there would end the configs that are still getting better.
    IF active AND flat AND curve.val_loss_slope > 0 AND curve.train_loss_slope < 0
       AND curve.val_loss > (1 + t.overfit_rise) * curve.min_val_loss THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'overfitting',
            format('validation loss rose to %s (lowest %s) over its last %s epochs while training loss fell, and'
                   ' the validation metric no longer improves',
                   _shown(curve.val_loss), _shown(curve.min_val_loss), t.curve_window),
            jsonb_build_object('epoch', epoch, 'val_loss', _evidence_number(curve.val_loss),
                               'min_val_loss', _evidence_number(curve.min_val_loss),
                               'val_loss_slope', _evidence_number(curve.val_loss_slope),
                               'train_loss_slope', _evidence_number(curve.train_loss_slope)),
            'stops it: more epochs fit the training rows better and the validation rows worse', '{}');
    END IF;

    IF curve.best_val_metric >= t.near_perfect OR curve.val_ahead >= t.leakage_epochs THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'leakage',
            CASE WHEN curve.val_ahead >= t.leakage_epochs
                 THEN format('validation beat training by more than %s on each of its last %s epochs',
                             _shown(margin), t.leakage_epochs)
                 ELSE format('validation metric %s is near perfect', _shown(curve.best_val_metric)) END,
            jsonb_build_object('epoch', epoch, 'best_val_metric', _evidence_number(curve.best_val_metric),
                               'epochs_val_ahead', curve.val_ahead, 'margin', _evidence_number(margin))
                || leakage_evidence(c.workload_id),
            'none by itself: check that no rows are shared between the training and validation splits', NULL);
    END IF;

    -- The best config (by best validation metric, the leaderboard's rank 1) finished its epochs at its
    -- best and still rising by more than the noise over the window.
    IF c.status = 'completed' AND flat IS FALSE AND curve.epochs >= t.curve_window
       AND curve.val_metric >= curve.best_val_metric
       AND NOT EXISTS (SELECT 1 FROM epoch_metrics m JOIN configs o USING (config_id)
                       WHERE o.workload_id = c.workload_id AND m.val_metric > curve.best_val_metric
                         AND m.val_metric < 'Infinity') THEN
        extended := least(c.epochs_done + greatest(1, ceil(c.max_epochs * t.extend_fraction)::int),
                          (SELECT l.max_epochs FROM role_limits(c.owner) l));
        IF extended > c.epochs_done THEN
            PERFORM add_suggestion(c.workload_id, config_id, 'extend',
                format('the best config finished its %s epochs still improving (%s an epoch over its last %s)',
                       c.epochs_done, _shown(curve.val_slope), t.curve_window),
                jsonb_build_object('epoch', epoch, 'val_metric', _evidence_number(curve.val_metric),
                                   'val_slope', _evidence_number(curve.val_slope), 'noise', _evidence_number(noise)),
                format('%s more epochs from where it is', extended - c.epochs_done),
                jsonb_build_object('max_epochs', extended));
        END IF;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION _refine_search_space(search_space jsonb, selected jsonb) RETURNS jsonb
LANGUAGE plpython3u IMMUTABLE SET search_path = cerebro, pg_temp
AS $$
from cerebro_plpy import entry
return entry.refine_search_space(search_space, selected)
$$;

-- The workload's suggestions as a config reaches an epoch: resume a stopped config that the field at
-- that epoch now ranks in the top (hyperband's top 1/eta, with at least eta there: the rung rule),
-- drill down around the top configs once enough have finished, and warn once about a dataset whose
-- segments hold less than a batch each.
CREATE OR REPLACE FUNCTION suggest_for_workload(workload_id int, epoch int, noise float8) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    t record := suggestion_thresholds();
    w record;
    stopped record;
    top record;
    refined jsonb;
    shard record;
BEGIN
    SELECT wl.dataset, wl.model, wl.search_space, wl.max_epochs INTO w
    FROM workloads wl WHERE wl.workload_id = suggest_for_workload.workload_id;

    FOR stopped IN
        SELECT c.config_id, m.val_metric, field.reached, field.better,
               greatest(1, field.reached / t.configs_at_epoch) AS keep
        FROM configs c
        JOIN epoch_metrics m ON m.config_id = c.config_id AND m.epoch = c.epochs_done
        CROSS JOIN LATERAL (SELECT count(*) AS reached, count(*) FILTER (WHERE o.val_metric > m.val_metric) AS better
                            FROM epoch_metrics o JOIN configs oc USING (config_id)
                            WHERE oc.workload_id = c.workload_id AND o.epoch = m.epoch) field
        WHERE c.workload_id = suggest_for_workload.workload_id AND c.status = 'stopped'
          AND c.epochs_done = suggest_for_workload.epoch AND c.epochs_done < c.max_epochs
          AND m.val_metric < 'Infinity'
    LOOP
        IF stopped.reached >= t.configs_at_epoch AND stopped.better < stopped.keep THEN
            PERFORM add_suggestion(workload_id, stopped.config_id, 'resume',
                format('stopped at epoch %s, its validation metric %s now ranks %s of the %s configs there (top %s)',
                       epoch, _shown(stopped.val_metric), stopped.better + 1, stopped.reached, stopped.keep),
                jsonb_build_object('epoch', epoch, 'val_metric', _evidence_number(stopped.val_metric),
                                   'rank', stopped.better + 1, 'configs_at_epoch', stopped.reached,
                                   'top', stopped.keep),
                'it trains its remaining epochs from where it stopped', '{}');
        END IF;
    END LOOP;

    SELECT jsonb_agg(l.config_id ORDER BY l.rank, l.config_id) AS configs,
           jsonb_agg(l.params ORDER BY l.rank, l.config_id) AS params,
           jsonb_agg(_evidence_number(l.best_val_metric) ORDER BY l.rank, l.config_id) AS metrics
    INTO top
    FROM (SELECT * FROM leaderboard l
          WHERE l.workload_id = suggest_for_workload.workload_id AND l.best_val_metric < 'Infinity'
          ORDER BY l.rank, l.config_id LIMIT t.drill_top) l;
    IF (SELECT count(*) FROM configs c WHERE c.workload_id = suggest_for_workload.workload_id
                                         AND c.status = 'completed') >= t.configs_at_epoch
       AND NOT EXISTS (SELECT 1 FROM suggestion_log s  -- the same top: nothing new to refine
                       WHERE s.workload_id = suggest_for_workload.workload_id AND s.kind = 'drill_down'
                         AND s.resolution IS NULL AND s.evidence -> 'configs' = top.configs) THEN
        refined := _refine_search_space(w.search_space, top.params);
        -- Only a space that still searches something (a range, or several choices).
        IF EXISTS (SELECT 1 FROM jsonb_each(refined) e
                   WHERE jsonb_typeof(e.value) = 'object' OR jsonb_array_length(
                       CASE WHEN jsonb_typeof(e.value) = 'array' THEN e.value ELSE '[]' END) > 1) THEN
            PERFORM add_suggestion(workload_id, NULL, 'drill_down',
                format('configs %s lead; a search around their params may find better ones',
                       (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(top.configs) v)),
                jsonb_build_object('configs', top.configs, 'best_val_metrics', top.metrics),
                format('a new workload of %s random configs around them, each starting from the best weights of its'
                       ' architecture here', t.drill_configs),
                jsonb_build_object('dataset', w.dataset, 'model', w.model, 'search_space', refined,
                                   'procedure', 'random', 'num_configs', t.drill_configs, 'max_epochs', w.max_epochs,
                                   'name', format('drill-down of #%s', workload_id), 'parent_workload', workload_id));
        END IF;
    END IF;

    IF epoch = 1 AND NOT EXISTS (SELECT 1 FROM suggestion_log s WHERE s.workload_id = suggest_for_workload.workload_id
                                                                  AND s.kind = 'dataset_too_small') THEN
        -- A hop trains one shard (dataset_buffers.segment is the shard: replication puts each on r segments).
        SELECT min(per.rows) AS rows, count(*) AS shards, max(per.segments) AS segments,
               max(per.replication) AS replication,
               greatest(1, min(per.rows) * count(*) / max(per.batch_size)) AS fitting_shards,
               max(per.batch_size) AS batch_size
        INTO shard
        FROM (SELECT sum(b.rows) AS rows, d.num_segments AS segments, d.replication,
                     (SELECT max((c.params ->> 'batch_size')::int) FROM configs c
                      WHERE c.workload_id = suggest_for_workload.workload_id
                        AND jsonb_typeof(c.params -> 'batch_size') = 'number') AS batch_size
              FROM dataset_buffers b JOIN datasets d USING (dataset_id)
              WHERE d.name = w.dataset AND b.split = 'train' GROUP BY b.segment, d.num_segments, d.replication) per;
        IF shard.rows < shard.batch_size THEN
            PERFORM add_suggestion(workload_id, NULL, 'dataset_too_small',
                format('a segment holds only %s training rows, less than one batch of %s: each hop trains one'
                       ' partial step', shard.rows, shard.batch_size),
                jsonb_build_object('min_rows_per_segment', shard.rows, 'segments', shard.segments,
                                   'shards', shard.shards, 'replication', shard.replication,
                                   'batch_size', shard.batch_size),
                format('none by itself: prepare the dataset in at most %s shards (num_segments => %s, or replication'
                       ' => %s on its %s segments) or use a smaller batch_size', shard.fitting_shards,
                       shard.fitting_shards, ceil(shard.segments::numeric / shard.fitting_shards), shard.segments),
                NULL);
        END IF;
    END IF;

    IF epoch = 1 THEN  -- rows copied between the splits: warned about before any curve can show it
        PERFORM suggest_duplicate_rows(workload_id);
    END IF;
END
$$;

-- Called by on_epoch_end (the workload's procedure lock held, as the system), after the procedure's
-- own decision: a config it pruned is judged as stopped.
CREATE OR REPLACE FUNCTION suggest_observe(config_id int, epoch int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    workload_id int := (SELECT c.workload_id FROM configs c WHERE c.config_id = suggest_observe.config_id);
    noise float8 := workload_noise(workload_id);
BEGIN
    PERFORM suggest_for_config(config_id, epoch, noise);
    PERFORM suggest_for_workload(workload_id, epoch, noise);
END
$$;
