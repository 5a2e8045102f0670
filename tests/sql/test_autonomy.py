"""Cruise control and autopilot: the system accepts suggestions itself, within a budget, never over a human (issue 19,
item 3).

Curves are written by hand as in test_suggestions.py, but each epoch ends through on_epoch_end (as record_hop calls
it, as the system), which makes the suggestions and lets the workload's autonomy act on them. One autopilot trains
for real.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db import client, connection
from cerebro_db.cluster import ClusterConfig
from tests import suggestion_curves
from tests.conftest import add_tenant, one, run_until_idle, unique
from tests.suggestion_curves import HEALTHY, Epoch, grid, shifted

Session = psycopg.Connection[Any]

# A config whose validation metric is flat and trails the leaders (a stop), and one whose training loss crawls (a
# clone with a higher lr), against healthy leaders: test_suggestions' construction, over 6 epochs of 8.
FLAT: list[Epoch] = [(1.0, 0.42, 1.1, 0.40), (0.9, 0.46, 1.0, 0.45)] + [(0.9, 0.47, 1.0, 0.46)] * 4
CRAWL: list[Epoch] = [(1.0 - 0.01 * e, 0.42, 1.1, 0.40 + 0.001 * e) for e in range(6)]


@pytest.fixture(scope="module")
def tenants(cluster: ClusterConfig, dsn: str, blobs_2seg: str) -> dict[str, str]:
    """Two cerebro_user logins; the first has a blobs dataset (its name under 'dataset')."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
    found = {"dsn": add_tenant(cluster, dsn, "pilot_user"), "other_dsn": add_tenant(cluster, dsn, "pilot_other")}
    found["dataset"] = unique("blobs_pilot")
    with psycopg.connect(found["dsn"], autocommit=True) as user:
        user.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}', validation_fraction => 0.25)",
            [found["dataset"], f"public.{blobs_2seg}"],
        )
    return found


def play(system: Session, curves: dict[int, list[Epoch]], start: int = 1) -> None:
    """The curves played as the scheduler would (its epoch ends run the autonomy too)."""
    suggestion_curves.play(system, curves, start, as_scheduler=True)


def stop_and_flat(user: Session, dataset: str, **autonomy: Any) -> tuple[int, list[int], int, int]:
    """Three leaders, a flat config (a stop) and a crawling one (a clone with a higher lr), played for 6 epochs."""
    workload_id, (*leaders, flat, crawling) = grid(user, dataset, 5, epochs=8, **autonomy)
    return workload_id, leaders, flat, crawling


def curves(leaders: list[int], flat: int, crawling: int) -> dict[int, list[Epoch]]:
    return {**{c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(leaders)}, flat: FLAT, crawling: CRAWL}


def resolutions(session: Session, workload_id: int) -> dict[str, tuple[str | None, str | None]]:
    """kind -> (resolution, resolved_by) of the workload's newest suggestion of each kind."""
    rows = session.execute(
        "SELECT DISTINCT ON (kind) kind, resolution, resolved_by FROM suggestion_log WHERE workload_id = %s"
        " ORDER BY kind, suggestion_id DESC",
        [workload_id],
    )
    return {kind: (resolution, by) for kind, resolution, by in rows}


def events(session: Session, config: int) -> list[tuple[str, str, int | None]]:
    rows = session.execute(
        "SELECT kind, actor, suggestion_id FROM config_events WHERE config_id = %s ORDER BY event_id", [config]
    )
    return [(kind, actor, link) for kind, actor, link in rows]


def status(session: Session, config: int) -> str:
    return str(one(session, "SELECT status FROM configs WHERE config_id = %s", config))


def test_manual_accepts_nothing(user: Session, tenants: dict[str, str], system: Session) -> None:
    workload_id, leaders, flat, crawling = stop_and_flat(user, tenants["dataset"])
    assert one(user, "SELECT autonomy, budget_epochs FROM workloads WHERE workload_id = %s", workload_id) == (
        "manual",
        None,
    )
    play(system, curves(leaders, flat, crawling))
    assert resolutions(user, workload_id) == {"stop": (None, None), "clone_higher_lr": (None, None)}
    assert status(user, flat) == "running"
    assert one(user, "SELECT count(*) FROM configs WHERE workload_id = %s", workload_id) == 5  # no clone


def test_cruise_accepts_a_clone_but_not_a_stop(user: Session, tenants: dict[str, str], system: Session) -> None:
    workload_id, leaders, flat, crawling = stop_and_flat(user, tenants["dataset"], autonomy="cruise")
    play(system, curves(leaders, flat, crawling))
    made = resolutions(user, workload_id)
    assert made["clone_higher_lr"] == ("accepted", "cerebro")
    assert made["stop"] == (None, None)  # stops need the user: still live for them
    assert status(user, flat) == "running"
    assert one(user, "SELECT count(*) FROM suggestions WHERE kind = 'stop' AND config_id = %s", flat) == 1
    accepted = one(
        user, "SELECT suggestion_id FROM suggestion_log WHERE config_id = %s AND kind = 'clone_higher_lr'", crawling
    )
    # Through the same path as a user's accept_suggestion, logged as the system's, with the link.
    assert events(user, crawling)[-1] == ("accepted", "cerebro", accepted)
    clone = one(
        user,
        "SELECT config_id, params ->> 'lr', created_by, status FROM configs WHERE cloned_from = %s",
        crawling,
    )
    assert clone[1:] == ("0.015", "cerebro", "pending")
    assert events(user, clone[0]) == [("created", "cerebro", None)]


def test_cruise_extends_the_best_and_drills_down_into_a_manual_workload(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    workload_id, configs = grid(user, tenants["dataset"], 4, epochs=4, autonomy="cruise")
    best = configs[3]
    flat_ends = {c: shifted(HEALTHY[:2] + [HEALTHY[2]] * 2, 0.01 * k) for k, c in enumerate(configs[:3])}
    rising = [(1.0, 0.5, 1.0, 0.5), (0.8, 0.65, 0.8, 0.65), (0.6, 0.75, 0.6, 0.75), (0.5, 0.85, 0.5, 0.85)]
    play(system, {**flat_ends, best: rising})
    made = resolutions(user, workload_id)
    assert made["extend"] == ("accepted", "cerebro") and made["drill_down"] == ("accepted", "cerebro")
    assert one(user, "SELECT status, max_epochs FROM configs WHERE config_id = %s", best) == ("running", 6)
    assert [e[:2] for e in events(user, best)[-3:]] == [
        ("max_epochs", "cerebro"),
        ("running", "cerebro"),
        ("accepted", "cerebro"),
    ]
    # The drill-down is the user's workload (their limits applied), warm-started, and manual: cruise control has no
    # budget, so a drill-down of its own would start workloads without end.
    child = one(
        user,
        "SELECT owner, autonomy, budget_of, warm_start, (SELECT count(*) FROM configs c"
        " WHERE c.workload_id = w.workload_id) FROM workloads w WHERE parent_workload_id = %s",
        workload_id,
    )
    assert child == (one(user, "SELECT current_user"), "manual", None, True, 4)


def test_an_autopilots_drill_down_spends_its_budget(user: Session, tenants: dict[str, str], system: Session) -> None:
    workload_id, configs = grid(user, tenants["dataset"], 4, epochs=4, autonomy="autopilot", budget_epochs=1000)
    flat_ends = {c: shifted(HEALTHY[:2] + [HEALTHY[2]] * 2, 0.01 * k) for k, c in enumerate(configs[:3])}
    play(system, {**flat_ends, configs[3]: [(1.0, 0.5, 1.0, 0.5), (0.8, 0.65, 0.8, 0.65), (0.6, 0.75, 0.6, 0.75)]})
    child, autonomy, budget_of = one(
        user, "SELECT workload_id, autonomy, budget_of FROM workloads WHERE parent_workload_id = %s", workload_id
    )
    assert (autonomy, budget_of) == ("autopilot", workload_id)
    before = one(user, "SELECT epochs FROM autopilot_spent(%s)", workload_id)
    first = one(user, "SELECT min(config_id) FROM configs WHERE workload_id = %s", child)
    done = one(user, "SELECT epochs_done FROM configs WHERE config_id = %s", first)  # warm-started: 0, its own count
    play(system, {first: [HEALTHY[0]]}, start=done + 1)
    assert one(user, "SELECT budget_workload, epochs FROM autopilot_spent(%s)", child) == (workload_id, before + 1)
    assert one(user, "SELECT epochs FROM autopilot_spent(%s)", workload_id) == before + 1
    # Its budget is the parent's to set.
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"spends the budget of workload {workload_id}"):
        user.execute("UPDATE workloads SET budget_epochs = 5 WHERE workload_id = %s", [child])


def test_autopilot_accepts_a_stop(user: Session, tenants: dict[str, str], system: Session) -> None:
    workload_id, leaders, flat, crawling = stop_and_flat(
        user, tenants["dataset"], autonomy="autopilot", budget_epochs=1000
    )
    play(system, curves(leaders, flat, crawling))
    made = resolutions(user, workload_id)
    assert made["stop"] == ("accepted", "cerebro")
    assert status(user, flat) == "stopped"
    # Every suggestion with an action was taken: none is left to the user.
    assert one(user, "SELECT count(*) FROM suggestions WHERE workload_id = %s AND sql IS NOT NULL", workload_id) == 0
    stop = one(user, "SELECT suggestion_id FROM suggestion_log WHERE config_id = %s AND kind = 'stop'", flat)
    # The system's stop is the status machine's prune, then the record that it was the suggestion's.
    assert events(user, flat)[-2:] == [("pruned", "cerebro", None), ("accepted", "cerebro", stop)]
    spent = one(user, "SELECT epochs, budget_epochs, spent FROM autopilot_spent(%s)", workload_id)
    assert spent == (
        one(
            system,
            "SELECT count(*) FROM epoch_metrics JOIN configs USING (config_id) WHERE workload_id = %s",
            workload_id,
        ),
        1000,
        False,
    )


@pytest.mark.parametrize(("budget", "stopped"), [(20, 2), (32, 0)])
def test_an_autopilot_whose_budget_cannot_finish_its_configs_stops_those_losing_a_rung(
    user: Session, tenants: dict[str, str], system: Session, budget: int, stopped: int
) -> None:
    """4 configs x 8 epochs need 32 epochs: a budget of 20 cannot finish them, so at rung epoch 1 the two that trail
    the first two there are stopped (hyperband's rule: the top third of those that reached it, at least 3 there);
    after that the 14 epochs left to train fit in the 16 left, and no rung stops any more. A budget of 32 stops
    none."""
    workload_id, configs = grid(user, tenants["dataset"], 4, epochs=8, autonomy="autopilot", budget_epochs=budget)
    best_first = configs[::-1]  # the best curves reach each epoch first
    play(system, {c: shifted(HEALTHY[:3], 0.01 * (3 - k)) for k, c in enumerate(best_first)})
    rung_stops = system.execute(
        "SELECT l.config_id, l.resolution, l.reason FROM suggestion_log l WHERE l.workload_id = %s AND l.kind = 'stop'"
        " ORDER BY l.config_id",
        [workload_id],
    ).fetchall()
    assert [config for config, _, _ in rung_stops] == sorted(best_first[2:])[:stopped], rung_stops
    for config, resolution, reason in rung_stops:
        assert resolution == "accepted" and "at rung epoch 1 it is not in the top 1 of the" in reason, reason
        assert "left in the budget" in reason and status(user, config) == "stopped"
        assert events(user, config)[-2][:2] == ("pruned", "cerebro")
    # Those left ran on to epoch 3 (rung 3 is reached by only 2: no verdict).
    assert [status(user, c) for c in best_first[:2]] == ["running", "running"]


def test_autopilot_leaves_a_config_its_user_resumed(user: Session, tenants: dict[str, str], system: Session) -> None:
    workload_id, leaders, flat, crawling = stop_and_flat(
        user, tenants["dataset"], autonomy="autopilot", budget_epochs=1000
    )
    play(system, curves(leaders, flat, crawling))
    assert status(user, flat) == "stopped"  # the autopilot's stop
    stopped_at = one(user, "SELECT epochs_done FROM configs WHERE config_id = %s", flat)
    user.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [flat])  # the user takes the wheel
    # It climbs out of its minimum: a divergence warning, whose action is a stop.
    play(system, {flat: [(2.0, 0.3, 2.2, 0.3)]}, start=stopped_at + 1)
    assert status(user, flat) == "running"
    warning = one(user, "SELECT suggestion_id FROM suggestions WHERE kind = 'divergence' AND config_id = %s", flat)
    login = one(user, "SELECT current_user")
    assert events(user, flat)[-2:] == [("running", login, None), ("declined", "cerebro", warning)]
    detail = one(user, "SELECT detail FROM config_events WHERE config_id = %s AND kind = 'declined'", flat)
    assert detail == (
        f"autopilot left suggestion {warning} (divergence) to the user: {login} resumed it at epoch {stopped_at}"
    )
    # Said once: the next epoch's new warning is left to the user too, without another event.
    play(system, {flat: [(2.5, 0.3, 2.6, 0.3)]}, start=stopped_at + 2)
    assert status(user, flat) == "running"
    assert [e[0] for e in events(user, flat)].count("declined") == 1


def test_autopilot_stops_at_its_budget_but_not_a_config_its_user_resumed(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    workload_id, configs = grid(user, tenants["dataset"], 4, epochs=8, autonomy="autopilot", budget_epochs=10)
    kept, *others = configs
    user.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [kept])  # resumed by hand
    play(system, {c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(configs)})
    # 2 epochs each, then epoch 3 of two configs: the second spent the budget and its end stopped the rest;
    # the config its user resumed trained on (its 3 epochs left of the 6 played).
    assert one(user, "SELECT epochs, spent FROM autopilot_spent(%s)", workload_id) == (10 + 3, True)
    spent_at = one(user, "SELECT budget_spent_at FROM workloads WHERE workload_id = %s", workload_id)
    assert spent_at is not None
    for config in others:
        assert status(user, config) == "stopped"
        kind, actor, detail = one(
            user,
            "SELECT kind, actor, detail FROM config_events WHERE config_id = %s ORDER BY event_id DESC LIMIT 1",
            config,
        )
        assert (kind, actor) == ("pruned", "cerebro")
        assert detail.startswith(f"autopilot budget of workload {workload_id} spent: 10 epochs of 10, ")
    assert status(user, kept) == "running"
    declined = one(user, "SELECT detail FROM config_events WHERE config_id = %s AND kind = 'declined'", kept)
    assert declined.endswith(f"left running: {one(user, 'SELECT current_user')} resumed it at epoch 0")
    # It accepts nothing more.
    assert (
        one(
            user,
            "SELECT count(*) FROM suggestion_log WHERE workload_id = %s AND resolved_at > %s",
            workload_id,
            spent_at,
        )
        == 0
    )
    # A new budget lets it go on.
    user.execute("UPDATE workloads SET budget_epochs = 100 WHERE workload_id = %s", [workload_id])
    assert one(
        user,
        "SELECT budget_spent_at, (autopilot_spent(workload_id)).spent FROM workloads WHERE workload_id = %s",
        workload_id,
    ) == (None, False)


def test_switching_autonomy_live_takes_effect_at_the_next_epoch_end(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    workload_id, leaders, flat, crawling = stop_and_flat(user, tenants["dataset"])
    play(system, curves(leaders, flat, crawling))
    assert resolutions(user, workload_id)["stop"] == (None, None)
    user.execute("UPDATE workloads SET autonomy = 'cruise' WHERE workload_id = %s", [workload_id])
    assert one(user, "SELECT count(*) FROM configs WHERE workload_id = %s", workload_id) == 5  # not yet
    next_epoch = {c: [shifted(HEALTHY, 0.01 * k)[5]] for k, c in enumerate(leaders)}
    play(system, {leaders[0]: next_epoch[leaders[0]]}, start=7)  # the first epoch end since
    assert resolutions(user, workload_id)["clone_higher_lr"] == ("accepted", "cerebro")
    assert status(user, flat) == "running"  # cruise: the stop stays the user's
    user.execute(
        "UPDATE workloads SET autonomy = 'autopilot', budget_seconds = 3600 WHERE workload_id = %s", [workload_id]
    )
    since = one(user, "SELECT autopilot_since FROM workloads WHERE workload_id = %s", workload_id)
    assert since is not None
    play(system, {leaders[1]: next_epoch[leaders[1]]}, start=7)
    assert status(user, flat) == "stopped"
    assert resolutions(user, workload_id)["stop"] == ("accepted", "cerebro")


def test_set_workload_autonomy_through_the_client(user: Session, tenants: dict[str, str], system: Session) -> None:
    workload_id, _ = grid(user, tenants["dataset"], 1, epochs=2)
    engine = connection.make_engine(tenants["dsn"])
    try:
        with client.transaction(engine) as conn:
            message = client.set_workload_autonomy(conn, workload_id, "autopilot", budget_epochs=20)
        assert message == f"workload {workload_id}: autopilot (budget 20 epochs)"
        assert one(
            user, "SELECT autonomy, budget_epochs, budget_seconds FROM workloads WHERE workload_id = %s", workload_id
        ) == ("autopilot", 20, None)
        with engine.connect() as conn:
            read = client.workload_autonomy(conn, workload_id)
        assert read is not None
        shown = ("autonomy", "budget_epochs", "budget_of", "budget_spent_at", "epochs_spent", "effective_budget_epochs")
        assert [read[key] for key in shown] == ["autopilot", 20, None, None, 0, 20]
        other = connection.make_engine(tenants["other_dsn"])
        try:
            with other.connect() as conn:
                assert client.workload_autonomy(conn, workload_id) is None  # another tenant's: unknown
        finally:
            other.dispose()
        refused = pytest.raises(client.ActionError, match="an autopilot needs a budget")
        with refused, client.transaction(engine) as conn:
            client.set_workload_autonomy(conn, workload_id, "autopilot")
        with client.transaction(engine) as conn:
            assert client.set_workload_autonomy(conn, workload_id, "cruise") == f"workload {workload_id}: cruise"
        with engine.connect() as conn:
            read = client.workload_autonomy(conn, workload_id)
        assert read is not None and (read["autonomy"], read["epochs_spent"]) == ("cruise", None)
        with pytest.raises(client.ActionError, match="unknown workload 0"), client.transaction(engine) as conn:
            client.set_workload_autonomy(conn, 0, "cruise")
    finally:
        engine.dispose()


def test_a_user_cannot_steer_another_tenants_autonomy_nor_pose_as_the_system(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    workload_id, leaders, flat, crawling = stop_and_flat(user, tenants["dataset"])
    play(system, curves(leaders, flat, crawling))
    with psycopg.connect(tenants["other_dsn"], autocommit=True) as other:
        changed = other.execute(
            "UPDATE workloads SET autonomy = 'autopilot', budget_epochs = 5 WHERE workload_id = %s", [workload_id]
        ).rowcount
        assert changed == 0  # row-level security: not theirs to see
        assert one(other, "SELECT count(*) FROM autopilot_spent(%s)", workload_id) == 0
    assert one(user, "SELECT autonomy FROM workloads WHERE workload_id = %s", workload_id) == "manual"

    # The system's columns and functions are not the user's.
    for column, value in (("budget_spent_at", "now()"), ("autopilot_since", "now()"), ("budget_of", "NULL")):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute(
                sql.SQL("UPDATE workloads SET {} = {} WHERE workload_id = %s").format(
                    sql.Identifier(column), sql.SQL(value)
                ),
                [workload_id],
            )
    for call in ("autonomy_observe(%s)", "autopilot_budget_spent(%s, 'x')", "user_steering(%s)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute(f"SELECT {call}", [flat])

    # Bad levels and budgets are refused with a hint, and change nothing.
    for assignment, message in (
        ("autonomy = 'turbo'", "autonomy must be manual, cruise or autopilot"),
        ("autonomy = NULL", "autonomy must be manual, cruise or autopilot"),
        ("autonomy = 'autopilot'", "an autopilot needs a budget"),
        ("autonomy = 'autopilot', budget_epochs = 0", "a budget is at least 1"),
        ("autonomy = 'autopilot', budget_seconds = -5", "a budget is at least 1"),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message) as refused:
            user.execute(sql.SQL("UPDATE workloads SET " + assignment + " WHERE workload_id = %s"), [workload_id])
        assert refused.value.diag.message_hint
    assert one(user, "SELECT autonomy, budget_epochs FROM workloads WHERE workload_id = %s", workload_id) == (
        "manual",
        None,
    )
    before = one(user, "SELECT count(*) FROM workloads")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="an autopilot needs a budget"):
        grid(user, tenants["dataset"], 1, epochs=2, autonomy="autopilot")
    assert one(user, "SELECT count(*) FROM workloads") == before

    # A user who sets cerebro.internal is still themselves: their acceptance is logged as theirs, not the system's.
    user.execute("SET cerebro.internal = on")
    stop = one(user, "SELECT suggestion_id FROM suggestions WHERE kind = 'stop' AND config_id = %s", flat)
    user.execute("SELECT accept_suggestion(%s)", [stop])
    login = one(user, "SELECT current_user")
    assert one(user, "SELECT resolved_by FROM suggestion_log WHERE suggestion_id = %s", stop) == login
    assert events(user, flat)[-2:] == [("stopped", login, None), ("accepted", login, stop)]
    clone = one(user, "SELECT clone_config(%s, '{\"lr\": 0.01}')", crawling)
    assert one(user, "SELECT created_by FROM configs WHERE config_id = %s", clone) == login


def test_an_autopilot_trained_for_real_stops_at_its_budget(
    user: Session, tenants: dict[str, str], dsn: str, system: Session
) -> None:
    budget = 9
    workload_id, configs = grid(user, tenants["dataset"], 4, epochs=6, autonomy="autopilot", budget_epochs=budget)
    run_until_idle(dsn)
    epochs, spent = one(user, "SELECT epochs, spent FROM autopilot_spent(%s)", workload_id)
    # A unit training on the other segment when the budget ran out may still finish its epoch.
    assert spent and budget <= epochs <= budget + 1
    assert one(
        user, "SELECT status, budget_spent_at IS NOT NULL FROM workloads WHERE workload_id = %s", workload_id
    ) == ("completed", True)
    pruned = one(
        user,
        "SELECT count(*) FROM config_events e JOIN configs c USING (config_id) WHERE c.workload_id = %s"
        " AND e.kind = 'pruned' AND e.actor = 'cerebro' AND e.detail LIKE 'autopilot budget%%'",
        workload_id,
    )
    assert pruned >= 1
    assert (
        one(
            user,
            "SELECT count(*) FROM configs WHERE workload_id = %s AND status IN ('pending', 'running')",
            workload_id,
        )
        == 0
    )


def done_with_two_stopped(
    user: Session, system: Session, dataset: str, stopper: str = "system", **autonomy: Any
) -> tuple[int, list[int], int, int]:
    """4 configs of 4 epochs: after epoch 1 the third and fourth there (``better``, ``worse``) are stopped, ``better``
    by ``stopper`` ('system': a procedure's prune; 'user': an UPDATE), ``worse`` by the system; the two leaders then
    finish flat (nothing to extend). With the budget left at 100 - 10 epochs, both stopped configs' 3 remaining
    epochs fit. Returns the workload, the leaders, better, worse."""
    workload_id, (worse, better, *leaders) = grid(user, dataset, 4, epochs=4, **autonomy)
    play(system, {c: [shifted(HEALTHY, 0.02 * k)[0]] for k, c in enumerate([worse, better, *leaders])})
    if stopper == "user":
        user.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [better])
    else:
        system.execute("SELECT config_transition(%s, 'prune', 'a procedure''s prune')", [better])
    system.execute("SELECT config_transition(%s, 'prune', 'a procedure''s prune')", [worse])
    flat_end = [HEALTHY[1]] * 3
    play(system, {c: shifted(flat_end, 0.04 + 0.01 * k) for k, c in enumerate(leaders)}, start=2)
    return workload_id, leaders, better, worse


def bring_backs(session: Session, workload_id: int) -> list[tuple[int, str | None, str | None]]:
    rows = session.execute(
        "SELECT config_id, resolution, resolved_by FROM suggestion_log WHERE workload_id = %s AND kind = 'resume'"
        " ORDER BY suggestion_id",
        [workload_id],
    )
    return [(config, resolution, by) for config, resolution, by in rows]


def test_an_autopilot_whose_configs_are_done_brings_back_the_best_it_stopped(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    """Both stopped configs' 3 remaining epochs fit in the 90 left: both come back, the best first."""
    workload_id, leaders, better, worse = done_with_two_stopped(
        user, system, tenants["dataset"], autonomy="autopilot", budget_epochs=100
    )
    assert bring_backs(user, workload_id) == [(better, "accepted", "cerebro"), (worse, "accepted", "cerebro")]
    assert [status(user, c) for c in (better, worse, *leaders)] == ["running", "running", "completed", "completed"]
    suggestion, reason, evidence = one(
        user, "SELECT suggestion_id, reason, evidence FROM suggestion_log WHERE config_id = %s", better
    )
    assert reason.startswith("the autopilot's configs are done with 90 epochs left in its budget: stopped at epoch 1")
    assert (evidence["rank"], evidence["remaining_epochs"], evidence["budget_epochs_left"]) == (1, 3, 90)
    assert events(user, better)[-2:] == [("running", "cerebro", None), ("accepted", "cerebro", suggestion)]
    # Brought back once: stopped again, it stays stopped when the configs are done again.
    play(system, {c: [HEALTHY[1]] for c in (better, worse)}, start=2)
    system.execute("SELECT config_transition(%s, 'prune', 'a procedure''s prune')", [better])
    play(system, {worse: [HEALTHY[1]] * 2}, start=3)
    assert status(user, worse) == "completed" and status(user, better) == "stopped"
    assert len(bring_backs(user, workload_id)) == 2


@pytest.mark.parametrize(("budget", "brought"), [(13, 1), (12, 0)])
def test_an_autopilot_brings_back_only_what_its_budget_can_finish(
    user: Session, tenants: dict[str, str], system: Session, budget: int, brought: int
) -> None:
    """10 epochs trained: a budget of 13 has 3 left, which finish the better stopped config and nothing after it; a
    budget of 12 has 2 left, less than either needs: the rule stays quiet."""
    workload_id, configs = grid(user, tenants["dataset"], 4, epochs=4, autonomy="autopilot", budget_epochs=100)
    worse, better, *leaders = configs
    play(system, {c: [shifted(HEALTHY, 0.02 * k)[0]] for k, c in enumerate(configs)})
    for config in (better, worse):
        system.execute("SELECT config_transition(%s, 'prune', 'a procedure''s prune')", [config])
    flat_end = [HEALTHY[1]] * 3
    leader_curves = {c: shifted(flat_end, 0.04 + 0.01 * k) for k, c in enumerate(leaders)}
    play(system, {c: curve[:2] for c, curve in leader_curves.items()}, start=2)
    # Lowered live (the rung stops need the budget to be short before: the leaders' last 2 epochs fit in it).
    user.execute("UPDATE workloads SET budget_epochs = %s WHERE workload_id = %s", [budget, workload_id])
    play(system, {c: curve[2:] for c, curve in leader_curves.items()}, start=4)
    assert one(user, "SELECT epochs, spent FROM autopilot_spent(%s)", workload_id) == (10, False)
    assert bring_backs(user, workload_id) == [(better, "accepted", "cerebro")][:brought]
    assert [status(user, c) for c in (better, worse)] == ["running" if brought else "stopped", "stopped"]


def test_an_autopilot_never_brings_back_a_config_its_user_stopped(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    workload_id, _, better, worse = done_with_two_stopped(
        user, system, tenants["dataset"], stopper="user", autonomy="autopilot", budget_epochs=100
    )
    # The user's stop stands; the next best the system stopped comes back instead.
    assert bring_backs(user, workload_id) == [(worse, "accepted", "cerebro")]
    assert status(user, better) == "stopped" and status(user, worse) == "running"
    assert [e[0] for e in events(user, better)][-1] == "stopped"


@pytest.mark.parametrize(
    "autonomy", [{"autonomy": "cruise"}, {"autonomy": "autopilot", "budget_seconds": 3600}], ids=["cruise", "seconds"]
)
def test_no_bring_back_without_an_epoch_budget(
    user: Session, tenants: dict[str, str], system: Session, autonomy: dict[str, Any]
) -> None:
    """Cruise control has no budget, and a wall-time budget alone gives no epoch count to plan with."""
    workload_id, _, better, worse = done_with_two_stopped(user, system, tenants["dataset"], **autonomy)
    assert bring_backs(user, workload_id) == []
    assert [status(user, c) for c in (better, worse)] == ["stopped", "stopped"]
