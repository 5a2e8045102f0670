-- Cruise control and autopilot: the system accepts suggestions itself (90_suggestions.sql makes them).
--   SELECT run_model_selection('fashion', 'cnn', '{"lr":[0.001,0.01]}', autonomy => 'cruise');
--   UPDATE workloads SET autonomy = 'autopilot', budget_epochs = 60 WHERE workload_id = 1;  -- live
--   SELECT * FROM autopilot_spent(1);
-- manual:    suggestions only.
-- cruise:    the non-destructive ones (suggestion_kinds.non_destructive: the clones, extend, resume,
--            drill_down: a manual workload) are accepted as they are made; stops and warnings stay
--            for the user.
-- autopilot: every suggestion with an action is accepted, until the budget (epochs its configs train,
--            clones and its drill-downs included, and/or wall time, both since autopilot_since) is
--            spent; then it stops the configs, with the reason in their events, and accepts nothing more.
--            While the epochs left in the budget cannot finish its configs, it also suggests (and so
--            accepts) hyperband's rung stops (autopilot_rung_stop).
--            Once its configs are all done with epochs left in the budget, it brings back the best
--            of those it stopped whose remaining epochs fit (autopilot_bring_back).
--            Its drill-downs run on autopilot within the same budget (budget_of).
-- At each epoch's end (on_epoch_end, after suggest_observe, inside the unit's transaction), through
-- the functions accept_suggestion uses (_open_suggestion, _carry_out_suggestion,
-- _resolve_suggestion) as the system: config_events log actor 'cerebro' and the suggestion's link,
-- suggestion_log.resolved_by is 'cerebro'. A suggestion it cannot accept stays open for the user.
-- Never over a human (user_steering): a config its user stopped is not resumed, extended nor cloned,
-- one they resumed or cloned is not stopped; a 'declined' event says so.

-- The autonomy columns of a workload: the level and the budget are its user's (column grants); when
-- the autonomy becomes autopilot its clock starts (autopilot_since), and a new budget lets a spent
-- autopilot go on. budget_of (a drill-down spends the budget of the workload whose autopilot started
-- it), autopilot_since and budget_spent_at are the system's.
CREATE OR REPLACE FUNCTION workloads_autonomy() RETURNS trigger
LANGUAGE plpgsql SET search_path = cerebro, pg_temp
AS $$
BEGIN
    IF NEW.autonomy IS NULL OR NEW.autonomy NOT IN ('manual', 'cruise', 'autopilot') THEN
        RAISE EXCEPTION 'autonomy must be manual, cruise or autopilot, got %', quote_nullable(NEW.autonomy)
            USING HINT = 'manual: suggestions only; cruise: the system accepts the non-destructive ones; autopilot:'
                         ' all, within budget_epochs and/or budget_seconds',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.budget_epochs < 1 OR NEW.budget_seconds < 1 THEN
        RAISE EXCEPTION 'a budget is at least 1, got budget_epochs %, budget_seconds %', NEW.budget_epochs,
                        NEW.budget_seconds
            USING HINT = 'NULL: no bound of that kind', ERRCODE = 'invalid_parameter_value';
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.budget_of IS NOT NULL AND NOT is_internal()
       AND (NEW.budget_epochs, NEW.budget_seconds) IS DISTINCT FROM (OLD.budget_epochs, OLD.budget_seconds) THEN
        RAISE EXCEPTION 'workload % spends the budget of workload %, whose autopilot started it', OLD.workload_id,
                        OLD.budget_of
            USING HINT = format('UPDATE workloads SET budget_epochs = ... WHERE workload_id = %s', OLD.budget_of),
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.autonomy = 'autopilot' AND NEW.budget_epochs IS NULL AND NEW.budget_seconds IS NULL
       AND NEW.budget_of IS NULL THEN
        RAISE EXCEPTION 'an autopilot needs a budget'
            USING HINT = 'set budget_epochs and/or budget_seconds with it (run_model_selection(..., autonomy =>'
                         ' ''autopilot'', budget_epochs => 40), or UPDATE workloads SET autonomy = ''autopilot'','
                         ' budget_epochs = 40 WHERE ...)',
                  ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.autonomy = 'autopilot' AND (TG_OP = 'INSERT' OR OLD.autonomy <> 'autopilot') THEN
        NEW.autopilot_since := now();
        NEW.budget_spent_at := NULL;
    ELSIF TG_OP = 'UPDATE' AND (NEW.budget_epochs, NEW.budget_seconds) IS DISTINCT FROM
                                (OLD.budget_epochs, OLD.budget_seconds) THEN
        NEW.budget_spent_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

-- Before workloads_guard and workloads_status (BEFORE triggers fire in name order).
CREATE OR REPLACE TRIGGER workloads_autonomy
BEFORE INSERT OR UPDATE OF autonomy, budget_epochs, budget_seconds ON workloads
FOR EACH ROW EXECUTE FUNCTION workloads_autonomy();

-- What the autopilot of workload_id has spent of its budget (the budget of the workload whose
-- drill-down it is, if it is one): the epochs trained since autopilot_since by the configs of that
-- workload and of the drill-downs it started, and the seconds since; spent: either reached its bound.
CREATE OR REPLACE FUNCTION autopilot_spent(workload_id int)
RETURNS TABLE (budget_workload int, epochs int, seconds int, budget_epochs int, budget_seconds int, spent boolean)
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT r.workload_id, trained.epochs, elapsed.seconds, r.budget_epochs, r.budget_seconds,
           coalesce(trained.epochs >= r.budget_epochs, false) OR coalesce(elapsed.seconds >= r.budget_seconds, false)
    FROM workloads w
    JOIN workloads r ON r.workload_id = coalesce(w.budget_of, w.workload_id)
    CROSS JOIN LATERAL (SELECT count(*)::int AS epochs
                        FROM epoch_metrics m JOIN configs c USING (config_id) JOIN workloads g USING (workload_id)
                        WHERE (g.workload_id = r.workload_id OR g.budget_of = r.workload_id)
                          AND m.finished_at >= r.autopilot_since) trained
    CROSS JOIN LATERAL (SELECT floor(extract(epoch FROM clock_timestamp() - r.autopilot_since))::int AS seconds) elapsed
    WHERE w.workload_id = autopilot_spent.workload_id
$$;

-- The user's own last say on a config, if any: 'stop' (they stopped it, or ended it by lowering
-- max_epochs) or 'run' (they resumed it, or it is a clone they made), the event that says so, and
-- in words. Stopping or resuming the whole workload says it for each of its configs. The system's
-- events (actor 'cerebro') and the configs a user's run_model_selection or add_config created are
-- not a say on them.
CREATE OR REPLACE FUNCTION user_steering(config_id int, OUT direction text, OUT event_id bigint, OUT said text)
LANGUAGE sql STABLE SET search_path = cerebro, pg_temp
AS $$
    SELECT CASE WHEN x.kind IN ('running', 'created') THEN 'run' ELSE 'stop' END, x.event_id,
           format('%s %s it at epoch %s', x.actor,
                  CASE x.kind WHEN 'running' THEN 'resumed' WHEN 'created' THEN 'cloned' WHEN 'stopped' THEN 'stopped'
                              ELSE 'ended' END, x.epochs_done)
    FROM (SELECT e.event_id, e.kind, e.actor, e.epochs_done
          FROM config_events e
          WHERE e.config_id = user_steering.config_id AND e.actor <> 'cerebro'
            AND e.kind IN ('running', 'stopped', 'completed')
          UNION ALL
          -- a clone (of a config of the same workload: a warm-started drill-down's are not) its user made
          SELECT e.event_id, e.kind, c.created_by, e.epochs_done
          FROM configs c
          JOIN configs source ON source.config_id = c.cloned_from AND source.workload_id = c.workload_id
          JOIN config_events e ON e.config_id = c.config_id AND e.kind = 'created'
          WHERE c.config_id = user_steering.config_id AND c.created_by <> 'cerebro') x
    ORDER BY x.event_id DESC
    LIMIT 1
$$;

-- The autopilot's budget is spent: it says so once (budget_spent_at), and stops the pending and
-- running configs of the workload and of the drill-downs it started, with the reason (a 'pruned'
-- event); not those their user resumed or cloned (a 'declined' event says why), nor those added since
-- the budget ran out. A config row another transaction holds is stopped at a later epoch's end (this
-- runs at each one while the budget stays spent).
CREATE OR REPLACE FUNCTION autopilot_budget_spent(budget_workload int, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    marked timestamptz;
    config record;
    steering record;
BEGIN
    SELECT w.budget_spent_at INTO marked FROM workloads w
    WHERE w.workload_id = budget_workload FOR NO KEY UPDATE NOWAIT;
    IF marked IS NULL THEN
        UPDATE workloads w SET budget_spent_at = clock_timestamp() WHERE w.workload_id = budget_workload
        RETURNING w.budget_spent_at INTO marked;
    END IF;
    FOR config IN
        SELECT c.config_id, c.epochs_done FROM configs c JOIN workloads g USING (workload_id)
        WHERE (g.workload_id = budget_workload OR g.budget_of = budget_workload)
          AND c.status IN ('pending', 'running') AND c.created_at < marked
        ORDER BY c.config_id
    LOOP
        BEGIN
            PERFORM 1 FROM configs c WHERE c.config_id = config.config_id FOR NO KEY UPDATE NOWAIT;
            SELECT * INTO steering FROM user_steering(config.config_id);
            IF steering.direction IS DISTINCT FROM 'run' THEN
                PERFORM config_transition(config.config_id, 'prune', reason);
            ELSIF NOT EXISTS (SELECT 1 FROM config_events e WHERE e.config_id = config.config_id
                                                              AND e.kind = 'declined' AND e.at >= marked) THEN
                INSERT INTO config_events (config_id, kind, epochs_done, detail, actor, at)
                VALUES (config.config_id, 'declined', config.epochs_done,
                        format('%s; left running: %s', reason, steering.said), 'cerebro', clock_timestamp());
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            NULL;  -- at a later epoch's end
        END;
    END LOOP;
END
$$;

-- Accepts suggestion s as the system at autonomy level, or leaves it open: returns what it did (NULL:
-- nothing). Rows are locked without waiting: a unit recording its hop or a user's statement holds
-- them for milliseconds, and waiting inside this unit's transaction could deadlock with them (the
-- suggestion is taken up at a later epoch's end, the caller catches lock_not_available). The system's
-- own writes pass the quota trigger: the owner's limits are checked here, after the action, so that
-- an action over them rolls back with it.
CREATE OR REPLACE FUNCTION autonomy_accept(s suggestion_log, level text, budget_workload int) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    carries_out text := (SELECT k.carries_out FROM suggestion_kinds k WHERE k.kind = s.kind);
    owner text := (SELECT w.owner FROM workloads w WHERE w.workload_id = s.workload_id);
    direction text := CASE carries_out WHEN 'stop' THEN 'stop' ELSE 'run' END;  -- of what it carries out
    steering record;
    carried record;
BEGIN
    PERFORM 1 FROM suggestion_log l WHERE l.suggestion_id = s.suggestion_id AND l.resolution IS NULL
    FOR UPDATE NOWAIT;
    IF NOT FOUND THEN
        RETURN NULL;  -- resolved meanwhile
    END IF;
    IF s.config_id IS NOT NULL THEN
        PERFORM 1 FROM configs c WHERE c.config_id = s.config_id AND suggestion_is_live(s, c)
        FOR NO KEY UPDATE NOWAIT;
        IF NOT FOUND THEN
            RETURN NULL;  -- stale: the config moved on (an earlier acceptance of this epoch's end, a user)
        END IF;
        SELECT * INTO steering FROM user_steering(s.config_id);
        IF steering.direction <> direction THEN
            -- Said once per kind while the user's say stands; the suggestion stays theirs.
            IF NOT EXISTS (SELECT 1 FROM config_events e JOIN suggestion_log d USING (suggestion_id)
                           WHERE e.config_id = s.config_id AND e.kind = 'declined' AND d.kind = s.kind
                             AND e.event_id > steering.event_id) THEN
                INSERT INTO config_events (config_id, kind, epochs_done, detail, actor, at, suggestion_id)
                VALUES (s.config_id, 'declined', s.config_epochs_done,
                        format('%s left suggestion %s (%s) to the user: %s', level, s.suggestion_id, s.kind,
                               steering.said),
                        'cerebro', clock_timestamp(), s.suggestion_id);
            END IF;
            RETURN NULL;
        END IF;
    END IF;
    IF carries_out = 'extend' THEN  -- the system's UPDATE passes configs_guard
        PERFORM check_max_epochs(owner, (s.action ->> 'max_epochs')::int);
    END IF;
    PERFORM _open_suggestion(s.suggestion_id);
    carried := _carry_out_suggestion(s);
    PERFORM _resolve_suggestion(s.suggestion_id, 'accepted', carried.made);
    PERFORM check_active_configs(owner);
    -- An autopilot's drill-down runs on autopilot within this budget. Cruise control's is manual: with no
    -- budget, a drill-down that drilled down in turn would start workloads without end.
    IF carries_out = 'run_model_selection' AND level = 'autopilot' THEN
        UPDATE workloads w SET autonomy = level, budget_of = budget_workload WHERE w.workload_id = carried.made;
    END IF;
    RETURN carried.done;
END
$$;

-- An autopilot whose epoch budget cannot finish its configs must choose among them, as hyperband does:
-- while the pending and running configs of its workloads need more epochs than the budget has left, a
-- config that loses its rung (rung_standing: not in the top 1/eta of those that reached a rung epoch)
-- gets a stop suggestion saying so, which the autopilot then accepts like any other (never over its
-- user: autonomy_accept). Once the budget can finish them, the curves' own rules are left to act. A
-- wall-time budget alone gives no epoch count to plan with.
CREATE OR REPLACE FUNCTION autopilot_rung_stop(config_id int, budget_workload int, epochs_left int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    c record;
    needed int;
    standing record;
BEGIN
    SELECT cf.workload_id, cf.status, cf.epochs_done, cf.max_epochs INTO c
    FROM configs cf WHERE cf.config_id = autopilot_rung_stop.config_id;
    IF epochs_left IS NULL OR c.status NOT IN ('pending', 'running') THEN
        RETURN;
    END IF;
    SELECT coalesce(sum(x.max_epochs - x.epochs_done), 0) INTO needed
    FROM configs x JOIN workloads g USING (workload_id)
    WHERE (g.workload_id = budget_workload OR g.budget_of = budget_workload) AND x.status IN ('pending', 'running');
    IF needed <= epochs_left THEN
        RETURN;
    END IF;
    SELECT * INTO standing FROM rung_standing(config_id, c.epochs_done);
    IF standing.loses THEN
        PERFORM add_suggestion(c.workload_id, config_id, 'stop',
            format('the autopilot''s budget cannot finish its configs (%s epochs to train, %s left in the budget);'
                   ' at rung epoch %s it is not in the top %s of the %s configs there (hyperband''s rule)',
                   needed, epochs_left, c.epochs_done, standing.keep, standing.reached),
            jsonb_build_object('epoch', c.epochs_done, 'val_metric', _evidence_number(standing.val_metric),
                               'configs_at_epoch', standing.reached, 'better', standing.better,
                               'keep', standing.keep, 'epochs_to_train', needed, 'budget_epochs_left', epochs_left),
            format('frees its %s remaining epochs for the configs ahead; it can be resumed later',
                   c.max_epochs - c.epochs_done),
            '{}');
    END IF;
END
$$;

-- An autopilot with epochs left in its budget when none of its configs is pending or running (this
-- epoch's end would finish its workloads) brings back configs it stopped, as successive halving
-- does: a resume suggestion for the best (by best validation metric) of this workload's stopped
-- configs whose remaining epochs fit in the epochs left, then for the next best that fits in what is
-- left after it, and so on; the autopilot accepts them like any other. Never a config its user
-- stopped (user_steering) or whose resume they dismissed, nor one resumed before (it had its second
-- chance; the curves' rules may stop it again). Returns whether it suggested any. A wall-time budget
-- alone gives no epoch count to plan with.
CREATE OR REPLACE FUNCTION autopilot_bring_back(workload_id int, budget_workload int, epochs_left int)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    budget_left int := epochs_left;
    brought int := 0;
    stopped record;
BEGIN
    IF epochs_left IS NULL OR epochs_left < 1 OR EXISTS (
        SELECT 1 FROM configs x JOIN workloads g USING (workload_id)
        WHERE (g.workload_id = budget_workload OR g.budget_of = budget_workload) AND x.status IN ('pending', 'running'))
    THEN
        RETURN false;
    END IF;
    FOR stopped IN
        SELECT c.config_id, c.epochs_done, c.max_epochs - c.epochs_done AS remaining, best.val_metric,
               row_number() OVER (ORDER BY best.val_metric DESC, c.config_id) AS rank, count(*) OVER () AS candidates
        FROM configs c
        CROSS JOIN LATERAL (SELECT max(m.val_metric) AS val_metric FROM epoch_metrics m
                            WHERE m.config_id = c.config_id AND m.val_metric < 'Infinity') best
        WHERE c.workload_id = autopilot_bring_back.workload_id AND c.status = 'stopped'
          AND c.epochs_done < c.max_epochs AND best.val_metric IS NOT NULL
          AND (SELECT u.direction FROM user_steering(c.config_id) u) IS DISTINCT FROM 'stop'
          AND NOT suggestion_repeat_blocked(c.workload_id, c.config_id, 'resume')
          AND NOT EXISTS (SELECT 1 FROM config_events r JOIN config_events e USING (config_id)
                          WHERE r.config_id = c.config_id AND r.kind = 'running'
                            AND e.kind IN ('stopped', 'pruned') AND e.event_id < r.event_id)
        ORDER BY best.val_metric DESC, c.config_id
    LOOP
        CONTINUE WHEN stopped.remaining > budget_left;
        PERFORM add_suggestion(autopilot_bring_back.workload_id, stopped.config_id, 'resume',
            format('the autopilot''s configs are done with %s epochs left in its budget: stopped at epoch %s, its'
                   ' best validation metric %s ranks %s of the %s it stopped, and its %s remaining epochs fit'
                   ' (successive halving''s bring-back)',
                   budget_left, stopped.epochs_done, _shown(stopped.val_metric), stopped.rank, stopped.candidates,
                   stopped.remaining),
            jsonb_build_object('epoch', stopped.epochs_done, 'best_val_metric', _evidence_number(stopped.val_metric),
                               'rank', stopped.rank, 'stopped_configs', stopped.candidates,
                               'remaining_epochs', stopped.remaining, 'budget_epochs_left', budget_left),
            'it trains its remaining epochs from where it stopped, within the budget', '{}');
        budget_left := budget_left - stopped.remaining;
        brought := brought + 1;
    END LOOP;
    RETURN brought > 0;
END
$$;

-- Called by on_epoch_end (the workload's procedure lock held, as the system) after suggest_observe:
-- the workload's open suggestions the level accepts, oldest first, each on its own (one that fails
-- is logged as a WARNING and stays open; never the unit's failure), then an autopilot's bring-backs
-- (autopilot_bring_back) the same way. An autopilot whose budget is spent stops the configs instead
-- (autopilot_budget_spent) and accepts nothing.
CREATE OR REPLACE FUNCTION autonomy_observe(config_id int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = cerebro, pg_temp
AS $$
DECLARE
    w record;
    budget record;
    s suggestion_log;
BEGIN
    SELECT wl.workload_id, wl.autonomy, wl.status, coalesce(wl.budget_of, wl.workload_id) AS budget_workload INTO w
    FROM configs c JOIN workloads wl USING (workload_id) WHERE c.config_id = autonomy_observe.config_id;
    IF w.autonomy = 'manual' OR w.status <> 'running' THEN
        RETURN;
    END IF;
    IF w.autonomy = 'autopilot' THEN
        SELECT * INTO budget FROM autopilot_spent(w.workload_id);
        IF budget.spent THEN
            BEGIN
                PERFORM autopilot_budget_spent(budget.budget_workload, format(
                    'autopilot budget of workload %s spent: %s epochs of %s, %s s of %s', budget.budget_workload,
                    budget.epochs, coalesce(budget.budget_epochs::text, 'no bound'), budget.seconds,
                    coalesce(budget.budget_seconds::text, 'no bound')));
            EXCEPTION WHEN lock_not_available THEN
                NULL;  -- the budget's workload row is held: at a later epoch's end
            END;
            RETURN;
        END IF;
        PERFORM autopilot_rung_stop(config_id, budget.budget_workload, budget.budget_epochs - budget.epochs);
    END IF;
    FOR pass IN 1..2 LOOP
        FOR s IN
            SELECT l.* FROM suggestion_log l JOIN suggestion_kinds k USING (kind) LEFT JOIN configs c USING (config_id)
            WHERE l.workload_id = w.workload_id AND l.resolution IS NULL AND l.action IS NOT NULL
              AND (k.non_destructive OR w.autonomy = 'autopilot')
              AND suggestion_is_live(l, c)  -- as the view suggestions shows them
            ORDER BY l.suggestion_id
        LOOP
            BEGIN
                PERFORM autonomy_accept(s, w.autonomy, w.budget_workload);
            EXCEPTION
                WHEN lock_not_available THEN
                    NULL;  -- at a later epoch's end
                WHEN OTHERS THEN
                    RAISE WARNING '% did not accept suggestion % (%): %', w.autonomy, s.suggestion_id, s.kind, SQLERRM;
            END;
        END LOOP;
        -- Then, if what it accepted left nothing to train (no extend, clone nor drill-down), its bring-backs.
        EXIT WHEN w.autonomy <> 'autopilot';
        EXIT WHEN NOT autopilot_bring_back(w.workload_id, budget.budget_workload, budget.budget_epochs - budget.epochs);
    END LOOP;
END
$$;
