"""Suggestions made at each epoch's end, and accepting or dismissing them as their user (issue 19, items 1-2).

Most curves are written by hand, the way record_hop would write them (epoch_metrics, then the hop's status
change), as the system; then the epoch-end hook that makes suggestions runs. One workload trains for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db.cluster import ClusterConfig
from cerebro_db.models import SUGGESTION_KINDS
from tests.conftest import add_tenant, one, run_until_idle, unique
from tests.suggestion_curves import HEALTHY, grid, play, shifted

Session = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def tenants(cluster: ClusterConfig, dsn: str, blobs_2seg: str) -> Iterator[dict[str, str]]:
    """Two cerebro_user logins with a blobs dataset each (name under 'dataset' / 'other_dataset')."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
    found: dict[str, str] = {}
    for key in ("", "other_"):
        login = add_tenant(cluster, dsn, "suggest_user")
        name = unique("blobs_suggest")
        with psycopg.connect(login, autocommit=True) as user:
            user.execute(
                "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}', validation_fraction => 0.25)",
                [name, f"public.{blobs_2seg}"],
            )
        found[f"{key}dsn"], found[f"{key}dataset"] = login, name
    yield found


def live(user: Session, workload_of: int) -> list[tuple[str, int | None]]:
    """The live suggestions (kind, config) of the workload of config ``workload_of``."""
    rows = user.execute(
        "SELECT kind, config_id FROM suggestions WHERE workload_id = (SELECT workload_id FROM configs"
        " WHERE config_id = %s) ORDER BY suggestion_id",
        [workload_of],
    )
    return [(kind, config) for kind, config in rows]


def suggestion(user: Session, kind: str, config: int) -> dict[str, Any]:
    cursor = user.execute("SELECT * FROM suggestions WHERE kind = %s AND config_id = %s", [kind, config])
    names = [c.name for c in cursor.description or []]
    row = cursor.fetchone()
    assert row is not None, f"no live {kind} suggestion for config {config}"
    return dict(zip(names, row, strict=True))


def events(user: Session, config: int) -> list[tuple[str, str, int | None]]:
    rows = user.execute(
        "SELECT kind, actor, suggestion_id FROM config_events WHERE config_id = %s ORDER BY event_id", [config]
    )
    return [(kind, actor, link) for kind, actor, link in rows]


def test_the_kinds_are_one_list(user: Session) -> None:
    assert {r[0] for r in user.execute("SELECT kind FROM suggestion_kinds")} == set(SUGGESTION_KINDS)
    assert one(user, "SELECT curve_window FROM suggestion_thresholds()") == 3


def test_a_clean_workload_gets_no_suggestion(user: Session, tenants: dict[str, str], system: Session) -> None:
    configs = grid(user, tenants["dataset"], 4, epochs=8)[1]
    play(system, {c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(configs)})
    assert live(user, configs[0]) == []
    assert one(system, "SELECT count(*) FROM suggestion_log WHERE config_id = ANY(%s)", configs) == 0


def test_a_dominated_flat_config_gets_stop_and_a_crawling_one_a_higher_lr(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    *leaders, flat, crawling = grid(user, tenants["dataset"], 5, epochs=8)[1]
    flat_curve = [(1.0, 0.42, 1.1, 0.40), (0.9, 0.46, 1.0, 0.45)] + [(0.9, 0.47, 1.0, 0.46)] * 4
    crawl_curve = [(1.0 - 0.01 * e, 0.42, 1.1, 0.40 + 0.001 * e) for e in range(6)]
    play(
        system,
        {**{c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(leaders)}, flat: flat_curve, crawling: crawl_curve},
    )
    assert sorted(set(live(user, flat))) == [("clone_higher_lr", crawling), ("stop", flat)]
    stop = suggestion(user, "stop", flat)
    assert stop["sql"] == f"UPDATE configs SET status = 'stopped' WHERE config_id = {flat}"
    assert (stop["epochs_done"], stop["status"], stop["max_epochs"]) == (6, "running", 8)
    assert stop["evidence"]["best_config"] == leaders[2] and stop["evidence"]["gap"] > stop["evidence"]["margin"]
    assert stop["non_destructive"] is False
    faster = suggestion(user, "clone_higher_lr", crawling)
    assert faster["sql"] == f"SELECT clone_config({crawling}, '{{\"lr\": 0.015}}')"  # lr 0.005 x 3
    assert faster["non_destructive"] is True

    # Accepting carries it out as the user and links the event; the view no longer lists it.
    assert one(user, "SELECT accept_suggestion(%s)", stop["suggestion_id"]) == f"config {flat} stopped"
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", flat) == "stopped"
    login = one(user, "SELECT current_user")
    # the action, then the record that it was the suggestion's (recorded only once carried out)
    assert events(user, flat)[-2:] == [("stopped", login, None), ("accepted", login, stop["suggestion_id"])]
    assert one(
        user, "SELECT resolution, resolved_by FROM suggestion_log WHERE suggestion_id = %s", stop["suggestion_id"]
    ) == ("accepted", login)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="was accepted already"):
        user.execute("SELECT accept_suggestion(%s)", [stop["suggestion_id"]])

    clone = int(one(user, "SELECT accept_suggestion(%s)", faster["suggestion_id"]).split()[1])
    assert one(user, "SELECT cloned_from, params ->> 'lr', status FROM configs WHERE config_id = %s", clone) == (
        crawling,
        "0.015",
        "pending",
    )
    assert events(user, crawling)[-1] == ("accepted", login, faster["suggestion_id"])
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", crawling) == "running"  # the source goes on


def test_a_swinging_or_rising_training_loss_gets_a_lower_lr_and_a_climbing_one_a_divergence_warning(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    *leaders, swinging, rising, diverging = grid(user, tenants["dataset"], 6, epochs=8)[1]
    play(
        system,
        {
            **{c: shifted(HEALTHY[:5], 0.01 * k) for k, c in enumerate(leaders)},
            swinging: [
                (1.0, 0.5, 1.0, 0.5),
                (0.7, 0.6, 0.8, 0.6),
                (0.9, 0.55, 0.9, 0.55),
                (0.6, 0.62, 0.7, 0.62),
                (0.85, 0.57, 0.85, 0.57),
            ],
            rising: [
                (0.6, 0.6, 0.7, 0.6),
                (0.5, 0.65, 0.6, 0.65),
                (0.55, 0.64, 0.62, 0.64),
                (0.6, 0.63, 0.65, 0.63),
                (0.66, 0.62, 0.7, 0.62),
            ],
            diverging: [
                (0.6, 0.6, 0.7, 0.6),
                (0.5, 0.65, 0.6, 0.65),
                (0.6, 0.6, 0.7, 0.6),
                (0.8, 0.5, 0.9, 0.5),
                (1.2, 0.4, 1.3, 0.4),
            ],
        },
    )
    kinds = set(live(user, swinging))
    assert {("clone_lower_lr", swinging), ("clone_lower_lr", rising), ("divergence", diverging)} <= kinds
    assert not any(config in leaders for _, config in kinds)
    assert ("clone_lower_lr", diverging) not in kinds  # its weights are not worth cloning: the warning says so
    slower = suggestion(user, "clone_lower_lr", swinging)
    assert slower["sql"] == f"SELECT clone_config({swinging}, '{{\"lr\": 0.00133}}')"  # 0.004 / 3
    warning = suggestion(user, "divergence", diverging)
    assert warning["category"] == "warning" and warning["evidence"]["train_loss"] == 1.2


#: The validation losses of the overfitting config below: lowest at epoch 3, 5 % above it by epoch 5, rising since.
OVERFIT_VAL_LOSS = [0.6, 0.5, 0.45, 0.48, 0.52, 0.56]


def test_overfitting_and_possible_leakage_are_warned_about(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    *leaders, overfit, climbing, ahead, perfect = grid(user, tenants["dataset"], 7, epochs=8)[1]
    play(
        system,
        {
            **{c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(leaders)},
            overfit: [
                (1.0, 0.5, 0.6, 0.6),
                (0.8, 0.6, 0.5, 0.7),
                (0.6, 0.7, 0.45, 0.74),
                (0.5, 0.75, 0.48, 0.74),
                (0.4, 0.8, 0.52, 0.73),
                (0.3, 0.85, 0.56, 0.72),
            ],
            # Validation loss rising as overfit's does, but its metric still climbs: no overfitting yet.
            climbing: [(1 - 0.14 * e, 0.5 + 0.07 * e, loss, 0.6 + 0.03 * e) for e, loss in enumerate(OVERFIT_VAL_LOSS)],
            ahead: [(1.0 - 0.1 * e, 0.5 + 0.03 * e, 0.8 - 0.1 * e, 0.7 + 0.03 * e) for e in range(6)],
            perfect: [(0.5, 0.8, 0.1, 0.95), (0.3, 0.9, 0.01, 0.9995)],
        },
    )
    kinds = set(live(user, overfit))
    assert {("overfitting", overfit), ("leakage", ahead), ("leakage", perfect)} <= kinds
    assert ("overfitting", climbing) not in kinds
    assert not any(config in leaders for _, config in kinds)
    leak = suggestion(user, "leakage", ahead)
    assert leak["sql"] is None and leak["evidence"]["epochs_val_ahead"] == 5
    # A warning with nothing to carry out is only dismissed; accepting changes nothing.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="nothing to carry out") as refused:
        user.execute("SELECT accept_suggestion(%s)", [leak["suggestion_id"]])
    assert "dismiss_suggestion" in (refused.value.diag.message_hint or "")
    assert one(user, "SELECT resolution FROM suggestion_log WHERE suggestion_id = %s", leak["suggestion_id"]) is None
    user.execute("SELECT dismiss_suggestion(%s)", [leak["suggestion_id"]])
    play(system, {ahead: [(0.3, 0.7, 0.1, 0.9)]}, start=7)  # still ahead: the dismissal sticks
    assert ("leakage", ahead) not in live(user, ahead)


def test_the_best_config_still_improving_gets_extend_and_the_workload_a_drill_down(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    configs = grid(user, tenants["dataset"], 4, epochs=4)[1]
    best = configs[3]
    curves = {c: shifted(HEALTHY[:2] + [HEALTHY[2]] * 2, 0.01 * k) for k, c in enumerate(configs[:3])}  # flat ends
    curves[best] = [(1.0, 0.5, 1.0, 0.5), (0.8, 0.65, 0.8, 0.65), (0.6, 0.75, 0.6, 0.75), (0.5, 0.85, 0.5, 0.85)]
    play(system, curves)
    kinds = live(user, best)
    assert ("extend", best) in kinds and [k for k in kinds if k[0] == "extend"] == [("extend", best)]
    assert ("drill_down", None) in kinds
    extend = suggestion(user, "extend", best)
    assert extend["sql"] == f"UPDATE configs SET max_epochs = 6, status = 'running' WHERE config_id = {best}"
    drill = one(
        user,
        "SELECT suggestion_id, evidence -> 'configs', sql FROM suggestions WHERE kind = 'drill_down'"
        " AND workload_id = (SELECT workload_id FROM configs WHERE config_id = %s)",
        best,
    )
    assert drill[1] == [best, configs[2]]
    assert "parent_workload => " in drill[2] and "warm_start => true" in drill[2]

    assert one(user, "SELECT accept_suggestion(%s)", extend["suggestion_id"]) == (
        f"config {best} extended to 6 epochs and resumed"
    )
    assert one(user, "SELECT status, max_epochs FROM configs WHERE config_id = %s", best) == ("running", 6)
    started = one(user, "SELECT accept_suggestion(%s)", drill[0])
    child = int(started.split()[1])
    parent = one(user, "SELECT workload_id FROM configs WHERE config_id = %s", best)
    assert one(
        user, "SELECT parent_workload_id, procedure, warm_start FROM workloads WHERE workload_id = %s", child
    ) == (parent, "random", True)
    assert one(user, "SELECT count(*) FROM configs WHERE workload_id = %s", child) == 4
    assert events(user, configs[2])[-1][0::2] == ("accepted", drill[0])  # logged on each config it is around
    user.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [child])


def test_a_stopped_config_that_now_ranks_in_the_top_gets_resume(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    early, *others = grid(user, tenants["dataset"], 4, epochs=4)[1]
    play(system, {early: [(0.5, 0.9, 0.5, 0.9)]})
    user.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [early])  # alone at epoch 1 yet
    assert live(user, early) == []
    play(system, {c: [(0.9, 0.5 + 0.1 * k, 0.9, 0.5 + 0.1 * k)] for k, c in enumerate(others)})
    resume = suggestion(user, "resume", early)
    # Made as soon as a rung's worth (3) reached epoch 1: first of them, in the top third.
    assert resume["evidence"]["rank"] == 1 and resume["evidence"]["configs_at_epoch"] == 3
    assert one(user, "SELECT accept_suggestion(%s)", resume["suggestion_id"]) == f"config {early} resumed"
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", early) == "running"


def test_a_dataset_with_less_than_a_batch_per_segment_is_warned_about(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    configs = grid(user, tenants["dataset"], 1, epochs=2, batch_size=128)[1]  # 90 training rows per segment
    play(system, {configs[0]: HEALTHY[:1]})
    (evidence,) = user.execute(
        "SELECT evidence FROM suggestions WHERE kind = 'dataset_too_small'"
        " AND workload_id = (SELECT workload_id FROM configs WHERE config_id = %s)",
        [configs[0]],
    ).fetchone() or [None]
    assert evidence == {"min_rows_per_segment": 90, "segments": 2, "shards": 2, "replication": 1, "batch_size": 128}


def test_a_stale_suggestion_is_refused_and_changes_nothing(
    user: Session, tenants: dict[str, str], system: Session
) -> None:
    *leaders, flat = grid(user, tenants["dataset"], 4, epochs=8)[1]
    flat_curve = [(1.0, 0.42, 1.1, 0.40)] + [(0.9, 0.45, 1.0, 0.45)] * 4
    play(system, {**{c: shifted(HEALTHY[:5], 0.01 * k) for k, c in enumerate(leaders)}, flat: flat_curve})
    stale = suggestion(user, "stop", flat)["suggestion_id"]
    late = {c: [shifted(HEALTHY, 0.01 * k)[5]] for k, c in enumerate(leaders)}
    play(system, {**late, flat: [(0.9, 0.45, 1.0, 0.45)]}, start=6)  # an epoch later: a new one replaces it
    fresh = suggestion(user, "stop", flat)["suggestion_id"]
    assert fresh != stale
    before = events(user, flat)
    for call in ("accept_suggestion", "dismiss_suggestion"):
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is stale") as refused:
            user.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(call)), [stale])
        assert f"config_id = {flat}" in (refused.value.diag.message_hint or "")
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", flat) == "running"
    assert events(user, flat) == before
    assert one(user, "SELECT resolution FROM suggestion_log WHERE suggestion_id = %s", stale) is None

    # Dismissed, the stop is not suggested again after a new epoch (until the config's status changes).
    assert "not suggested again" in one(user, "SELECT dismiss_suggestion(%s)", fresh)
    play(system, {**late, flat: [(0.9, 0.45, 1.0, 0.45)]}, start=7)
    assert ("stop", flat) not in live(user, flat)
    assert one(
        system, "SELECT max(suggestion_id) FROM suggestion_log WHERE config_id = %s AND kind = 'stop'", flat
    ) == (fresh)


def test_another_tenant_can_neither_see_nor_answer_a_suggestion(
    user: Session, other: Session, tenants: dict[str, str], system: Session
) -> None:
    *leaders, flat = grid(user, tenants["dataset"], 4, epochs=8)[1]
    play(
        system,
        {
            **{c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(leaders)},
            flat: [(1.0, 0.42, 1.1, 0.40)] + [(0.9, 0.45, 1.0, 0.45)] * 5,
        },
    )
    target = suggestion(user, "stop", flat)["suggestion_id"]
    assert one(other, "SELECT count(*) FROM suggestions") == 0
    assert one(other, "SELECT count(*) FROM suggestion_log") == 0
    newest = one(system, "SELECT max(suggestion_id) FROM suggestion_log")
    for guess in range(max(1, newest - 20), newest + 3):  # every recent id, and some not made yet
        for call in ("accept_suggestion", "dismiss_suggestion"):
            with pytest.raises(psycopg.errors.UndefinedObject, match=f"unknown suggestion {guess}"):
                other.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(call)), [guess])
        with pytest.raises(psycopg.errors.UndefinedObject, match=f"no open suggestion {guess} of yours"):
            other.execute("SELECT _resolve_suggestion(%s, 'dismissed')", [guess])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        other.execute("UPDATE suggestion_log SET resolution = 'dismissed' WHERE suggestion_id = %s", [target])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        user.execute("UPDATE suggestion_log SET resolution = 'dismissed' WHERE suggestion_id = %s", [target])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        user.execute("SELECT suggest_observe(%s, 1)", [flat])
    # The owner cannot log an acceptance without carrying it out: the event log says only what was done.
    events = one(user, "SELECT count(*) FROM config_events WHERE config_id = %s", flat)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match=f"suggestion {target} .* not carried out"):
        user.execute("SELECT _resolve_suggestion(%s, 'accepted')", [target])
    assert one(user, "SELECT count(*) FROM config_events WHERE config_id = %s", flat) == events
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", flat) == "running"
    assert suggestion(user, "stop", flat)["suggestion_id"] == target  # still open, still the user's


def test_a_diverging_config_trained_for_real_gets_a_lower_lr_or_a_divergence_warning(
    user: Session, tenants: dict[str, str], dsn: str, system: Session
) -> None:
    # One segment: no race between segments decides the order of the hops, so the curves are the same every run.
    dataset = unique("blobs_1seg")
    user.execute(
        "SELECT * FROM prepare_dataset(%s, (SELECT source_table FROM datasets WHERE name = %s), 'label',"
        " '{f0,f1,f2,f3,f4,f5}', validation_fraction => 0.25, num_segments => 1)",
        [dataset, tenants["dataset"]],
    )
    workload_id = one(
        user,
        "SELECT run_model_selection(%s, 'mlp', %s, max_epochs => 6, seed => 3)",
        dataset,
        json.dumps({"lr": [0.01, 2.0], "optimizer": "adam", "batch_size": [16], "hidden_units": [16]}),
    )
    run_until_idle(dsn)
    made: dict[float, set[str]] = {0.01: set(), 2.0: set()}
    for lr, kind in user.execute(
        "SELECT (c.params ->> 'lr')::float8, s.kind FROM suggestion_log s JOIN configs c USING (config_id)"
        " WHERE c.workload_id = %s",
        [workload_id],
    ):
        made[lr].add(kind)
    # Adam at lr 2 swings its training loss by orders of magnitude; at lr 0.01 it descends.
    assert made[2.0] & {"clone_lower_lr", "divergence"}, made
    assert not made[0.01] & {"clone_lower_lr", "divergence"}, made
