"""The suggestions panel on the workload page (and a config's own on its page), with AppTest on real workloads whose
curves are written by hand the way record_hop writes them, so the epoch-end hook suggests; and its pure shaping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

# Beside app.py, as the pages import it (tests.ui.conftest puts its folder on the path).
import suggestion_panel
from streamlit.testing.v1 import AppTest

from tests.conftest import one
from tests.suggestion_curves import HEALTHY, Epoch, grid, play, shifted
from tests.ui.conftest import open_page

Session = psycopg.Connection[Any]
# Far behind the leaders and flat for its last 3 epochs: stop.
FLAT: list[Epoch] = [(1.0, 0.42, 1.1, 0.40), (0.9, 0.46, 1.0, 0.45)] + [(0.9, 0.47, 1.0, 0.46)] * 4
# Training loss falling by 1 % an epoch while it trails: clone with a higher lr.
CRAWLING: list[Epoch] = [(1.0 - 0.01 * e, 0.42, 1.1, 0.40 + 0.001 * e) for e in range(6)]
# Training loss climbing well above its lowest: a divergence warning.
DIVERGING: list[Epoch] = [
    (0.6, 0.6, 0.7, 0.6),
    (0.5, 0.65, 0.6, 0.65),
    (0.6, 0.6, 0.7, 0.6),
    (0.8, 0.5, 0.9, 0.5),
    (1.2, 0.4, 1.3, 0.4),
]
# Validation near perfect: possible leakage between the splits, a warning with nothing to carry out.
PERFECT: list[Epoch] = [(0.5, 0.8, 0.1, 0.95), (0.3, 0.9, 0.01, 0.9995)]


@pytest.fixture
def system(dsn: str) -> Iterator[Session]:
    """The schema owner playing record_hop; the workloads made meanwhile are deleted afterwards (no later test's
    scheduler may train them)."""
    with psycopg.connect(dsn, autocommit=True) as session:
        before = one(session, "SELECT coalesce(max(workload_id), 0) FROM workloads")
        session.execute("SET cerebro.internal = on")
        yield session
        session.execute("DELETE FROM workloads WHERE workload_id > %s", [before])


@pytest.fixture
def steered(conn: Session, system: Session, blobs_2seg: str) -> dict[str, Any]:
    """Three healthy leaders, a flat config far behind (stop) and a crawling one (clone with a higher lr)."""
    workload_id, (*leaders, flat, crawling) = grid(conn, blobs_2seg, 5, epochs=8)
    play(system, {**{c: shifted(HEALTHY, 0.01 * k) for k, c in enumerate(leaders)}, flat: FLAT, crawling: CRAWLING})
    found = {
        (kind, config): suggestion_id
        for suggestion_id, kind, config in conn.execute(
            "SELECT suggestion_id, kind, config_id FROM suggestions WHERE workload_id = %s", [workload_id]
        )
    }
    assert set(found) == {("stop", flat), ("clone_higher_lr", crawling)}, found
    return {
        "workload": workload_id,
        "flat": flat,
        "crawling": crawling,
        "stop": found["stop", flat],
        "faster": found["clone_higher_lr", crawling],
    }


def texts(app: AppTest) -> str:
    kinds = ("markdown", "caption", "error", "toast", "code")
    return "\n".join(str(element.value) for kind in kinds for element in app.get(kind))


def unescaped(app: AppTest) -> str:
    """:func:`texts` as the page shows it (our captions escape Markdown)."""
    return texts(app).replace("\\", "")


def keys(app: AppTest, prefix: str) -> list[str]:
    return [button.key for button in app.button if button.key and button.key.startswith(prefix)]


def test_the_panel_lists_the_suggestions_and_accept_carries_one_out(conn: Session, steered: dict[str, Any]) -> None:
    flat, crawling, stop, faster = steered["flat"], steered["crawling"], steered["stop"], steered["faster"]
    app = open_page("workload_detail", workload=str(steered["workload"]))
    (panel,) = [e for e in app.get("expander") if str(e.proto.label).startswith("Suggestions")]
    assert panel.proto.label == "Suggestions: 2 actions"
    shown = texts(app)
    assert "trails config" in shown and "validation points are flat" in shown, shown  # the stop's reason
    assert "training loss falls only" in shown, shown  # the clone's
    assert "gap 0." in shown and "margin 0." in shown, shown  # the evidence, short
    assert f"UPDATE configs SET status = 'stopped' WHERE config_id = {flat}" in shown  # its SQL, in a code block
    assert keys(app, "accept_suggestion_") == [f"accept_suggestion_{stop}", f"accept_suggestion_{faster}"]
    assert keys(app, "dismiss_suggestion_") == [f"dismiss_suggestion_{stop}", f"dismiss_suggestion_{faster}"]
    links = {link.proto.query_string for link in app.get("page_link")}
    assert {f"config={flat}", f"config={crawling}"} <= links

    app.button(key=f"accept_suggestion_{stop}").click().run()
    assert one(conn, "SELECT status FROM configs WHERE config_id = %s", flat) == "stopped"
    assert [t.value for t in app.toast] == [f"suggestion {stop} (stop) accepted: config {flat} stopped"], texts(app)
    assert keys(app, "accept_suggestion_") == [f"accept_suggestion_{faster}"]  # the accepted one is gone

    app.button(key=f"dismiss_suggestion_{faster}").click().run()
    assert keys(app, "dismiss_suggestion_") == []
    assert "No suggestions now" in texts(app)
    assert one(conn, "SELECT resolution FROM suggestion_log WHERE suggestion_id = %s", faster) == "dismissed"
    assert one(conn, "SELECT count(*) FROM configs WHERE cloned_from = %s", crawling) == 0  # nothing carried out

    # The config's history says it was the suggestion, and why.
    page = open_page("config", config=str(flat))
    (history,) = [frame.value for frame in page.dataframe if list(frame.value.columns)[:1] == ["at"]]
    accepted = history[history["kind"] == "accepted"]
    (detail,) = list(accepted["detail"])
    assert detail.startswith(f"suggestion {stop} (stop): at epoch 6 it trails config"), detail
    assert detail.endswith(f" · ran: UPDATE configs SET status = 'stopped' WHERE config_id = {flat}"), detail


def test_a_config_page_lists_its_own_suggestions(steered: dict[str, Any]) -> None:
    app = open_page("config", config=str(steered["crawling"]))
    assert keys(app, "accept_suggestion_") == [f"accept_suggestion_{steered['faster']}"]  # not the other's stop
    assert "clone_config" in texts(app)


def test_a_stale_suggestion_is_refused_and_changes_nothing(conn: Session, steered: dict[str, Any]) -> None:
    flat, stop = steered["flat"], steered["stop"]
    app = open_page("workload_detail", workload=str(steered["workload"]))
    accept = app.button(key=f"accept_suggestion_{stop}")  # rendered for the config as it was
    conn.execute("UPDATE configs SET max_epochs = 9 WHERE config_id = %s", [flat])  # meanwhile, from psql
    accept.click().run()
    errors = [str(error.value) for error in app.error]
    assert any(f"suggestion {stop} is stale" in error and "(hint: " in error for error in errors), texts(app)
    assert one(conn, "SELECT status, max_epochs FROM configs WHERE config_id = %s", flat) == ("running", 9)
    assert one(conn, "SELECT resolution FROM suggestion_log WHERE suggestion_id = %s", stop) is None
    assert one(conn, "SELECT count(*) FROM config_events WHERE suggestion_id = %s", stop) == 0
    assert keys(app, "accept_suggestion_") == [f"accept_suggestion_{steered['faster']}"]  # the stale one is gone
    app.run()  # the refusal stays until dismissed
    assert any(f"suggestion {stop} is stale" in str(error.value) for error in app.error)


def test_a_warning_with_nothing_to_carry_out_has_no_accept(conn: Session, system: Session, blobs_2seg: str) -> None:
    workload_id, (*leaders, diverging, perfect) = grid(conn, blobs_2seg, 5, epochs=8)
    play(
        system,
        {
            **{c: shifted(HEALTHY[:5], 0.01 * k) for k, c in enumerate(leaders)},
            diverging: DIVERGING,
            perfect: PERFECT,
        },
    )
    found = dict(conn.execute("SELECT kind, suggestion_id FROM suggestions WHERE workload_id = %s", [workload_id]))
    assert {"divergence", "leakage"} <= set(found), found
    leakage, divergence = found["leakage"], found["divergence"]
    app = open_page("workload_detail", workload=str(workload_id))
    (panel,) = [e for e in app.get("expander") if str(e.proto.label).startswith("Suggestions")]
    assert str(panel.proto.label).startswith("Suggestions: 2 warnings"), panel.proto.label
    assert keys(app, "dismiss_suggestion_")[:2] == [f"dismiss_suggestion_{divergence}", f"dismiss_suggestion_{leakage}"]
    assert f"accept_suggestion_{leakage}" not in keys(app, "accept_suggestion_")  # nothing to run: read, dismiss
    assert f"accept_suggestion_{divergence}" in keys(app, "accept_suggestion_")  # it offers the stop it calls for
    app.button(key=f"dismiss_suggestion_{leakage}").click().run()
    assert [t.value for t in app.toast] == [
        f"suggestion {leakage} (leakage) dismissed: not suggested again for config {perfect} until its status changes"
    ]
    assert f"dismiss_suggestion_{leakage}" not in keys(app, "dismiss_suggestion_")
    assert one(conn, "SELECT resolution FROM suggestion_log WHERE suggestion_id = %s", leakage) == "dismissed"


def test_the_autonomy_switch_changes_the_workload_and_a_refused_switch_changes_nothing(
    conn: Session, system: Session, blobs_2seg: str
) -> None:
    workload_id, _ = grid(conn, blobs_2seg, 2, epochs=4)
    row = "SELECT autonomy, budget_epochs, budget_seconds FROM workloads WHERE workload_id = %s"
    app = open_page("workload_detail", workload=str(workload_id))
    switch = app.segmented_control(key=f"autonomy_{workload_id}")
    assert switch.value == "manual"
    assert "Manual: the system only suggests" in unescaped(app)
    assert not [n for n in app.number_input if str(n.key).startswith("budget_")]  # a budget only for autopilot

    switch.set_value("cruise").run()
    app.button(key=f"apply_autonomy_{workload_id}").click().run()
    assert one(conn, row, workload_id) == ("cruise", None, None)
    assert [t.value for t in app.toast] == [f"workload {workload_id}: cruise"]
    assert "Cruise control: the system accepts the non-destructive suggestions" in unescaped(app)

    # An autopilot without a budget: the server's refusal, with its hint, and the workload stays as it was.
    app.segmented_control(key=f"autonomy_{workload_id}").set_value("autopilot").run()
    assert app.number_input(key=f"budget_epochs_{workload_id}").value is None
    app.button(key=f"apply_autonomy_{workload_id}").click().run()
    errors = [str(error.value) for error in app.error]
    assert any("an autopilot needs a budget" in error and "(hint: " in error for error in errors), texts(app)
    assert one(conn, row, workload_id) == ("cruise", None, None)
    assert one(conn, "SELECT autopilot_since FROM workloads WHERE workload_id = %s", workload_id) is None

    app.number_input(key=f"budget_epochs_{workload_id}").set_value(12).run()
    app.button(key=f"apply_autonomy_{workload_id}").click().run()
    assert one(conn, row, workload_id) == ("autopilot", 12, None)
    assert f"workload {workload_id}: autopilot (budget 12 epochs)" in [t.value for t in app.toast]
    assert "Spent so far: 0 of 12 epochs." in unescaped(app)
    assert app.segmented_control(key=f"autonomy_{workload_id}").value == "autopilot"  # follows the row

    conn.execute("UPDATE workloads SET autonomy = 'manual' WHERE workload_id = %s", [workload_id])  # from psql
    app.run()
    assert app.segmented_control(key=f"autonomy_{workload_id}").value == "manual"


def test_a_config_page_has_no_autonomy_switch(steered: dict[str, Any]) -> None:
    app = open_page("config", config=str(steered["crawling"]))
    assert not app.segmented_control or all(
        not str(control.key).startswith("autonomy_") for control in app.segmented_control
    )


# ---- pure shaping


def test_the_autonomy_text_says_what_the_system_does_and_what_it_spent() -> None:
    manual = {"autonomy": "manual", "budget_epochs": None, "budget_seconds": None}
    assert suggestion_panel.autonomy_text(manual) == "Manual: the system only suggests; you accept or dismiss."
    pilot = {
        "autonomy": "autopilot",
        "budget_of": None,
        "budget_spent_at": None,
        "epochs_spent": 7,
        "seconds_spent": 95,
        "effective_budget_epochs": 40,
        "effective_budget_seconds": None,
    }
    assert suggestion_panel.autonomy_text(pilot).endswith("as you set it. Spent so far: 7 of 40 epochs.")
    both = {**pilot, "effective_budget_seconds": 600}
    assert suggestion_panel.autonomy_text(both).endswith("Spent so far: 7 of 40 epochs, 95 of 600 seconds.")
    spent = {**pilot, "budget_spent_at": datetime(2026, 12, 1, 9, 5, 7, tzinfo=UTC)}
    assert suggestion_panel.autonomy_text(spent).endswith(
        "Budget spent (7 of 40 epochs) at 09:05:07: a new budget lets it go on."
    )
    drill = {**pilot, "budget_of": 3}
    assert suggestion_panel.autonomy_text(drill).endswith(
        "A drill-down: it spends the budget of workload 3 (7 of 40 epochs so far)."
    )


def row(suggestion_id: int, kind: str, category: str = "action", config_id: int | None = 1) -> dict[str, Any]:
    return {"suggestion_id": suggestion_id, "kind": kind, "category": category, "config_id": config_id}


def test_warnings_come_first_then_actions_stops_first_then_the_oldest() -> None:
    found = [
        row(1, "clone_higher_lr"),
        row(2, "stop"),
        row(3, "leakage", "warning"),
        row(4, "stop"),
        row(5, "divergence", "warning"),
        row(6, "drill_down", config_id=None),
    ]
    assert [s["suggestion_id"] for s in suggestion_panel.ordered(found)] == [5, 3, 2, 4, 1, 6]


def test_the_title_counts_warnings_and_actions() -> None:
    assert suggestion_panel.title([row(1, "stop")]) == "Suggestions: 1 action"
    assert suggestion_panel.title([row(1, "leakage", "warning"), row(2, "stop"), row(3, "extend")]) == (
        "Suggestions: 1 warning, 2 actions"
    )
    assert suggestion_panel.title([row(1, "leakage", "warning")]) == "Suggestions: 1 warning"


def test_evidence_is_one_short_line() -> None:
    evidence = {"gap": 0.053412, "epoch": 6, "configs": [3, 5], "val_loss": "NaN", "best_config": 3, "x": None}
    assert suggestion_panel.evidence_text(evidence) == (
        "gap 0.0534 · epoch 6 · configs 3, 5 · val loss NaN · best config 3 · x —"
    )
    assert suggestion_panel.evidence_text({}) == ""


def test_server_words_are_not_markup() -> None:
    assert suggestion_panel.plain("lr * 3, :red[x] $5_a") == r"lr \* 3, \:red\[x\] \$5\_a"


def test_the_panel_scrolls_only_past_a_few() -> None:
    assert suggestion_panel.scroll_height(suggestion_panel.SCROLL_AFTER) == "content"
    assert suggestion_panel.scroll_height(suggestion_panel.SCROLL_AFTER + 1) == suggestion_panel.SCROLL_HEIGHT


def test_an_accepted_event_says_which_suggestion_and_why_first() -> None:
    events = [
        {"kind": "stopped", "detail": None, "suggestion_id": None},
        {
            "kind": "accepted",
            "detail": "suggestion 4 (stop): UPDATE ...",
            "suggestion_id": 4,
            "suggestion_kind": "stop",
            "suggestion_reason": "it trails",
            "suggestion_sql": "UPDATE ...",
        },
    ]
    explained = suggestion_panel.explain_events(events)
    assert explained[0] == events[0]
    assert explained[1]["detail"] == "suggestion 4 (stop): it trails · ran: UPDATE ..."
