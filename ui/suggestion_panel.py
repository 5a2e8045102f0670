"""The suggestions panel: what the system suggests for a workload (or one config), with Accept and Dismiss, and on
the workload page the autonomy switch: who accepts them (manual, cruise control, autopilot within a budget).

Warnings come first: they question the numbers every action relies on (possible leakage makes the ranking
meaningless, a diverging config fails within epochs) and are few, so they never bury the actions. Actions follow
in the order of ``cerebro_db.models.SUGGESTION_KINDS``, stops first: a dominated config spends segment time until
its stop is accepted, and the suggestion lapses at its next epoch. Within a kind, the oldest first.
"""

from __future__ import annotations

from typing import Any, Literal

import common
import streamlit as st
from sqlalchemy import Connection

from cerebro_db import client
from cerebro_db.models import AUTONOMY_LEVELS, SUGGESTION_KINDS

#: How the panel names each kind, with its icon.
KINDS = {
    "stop": ("stop", ":material/stop_circle:"),
    "clone_lower_lr": ("clone, lower lr", ":material/south_east:"),
    "clone_higher_lr": ("clone, higher lr", ":material/north_east:"),
    "extend": ("more epochs", ":material/more_time:"),
    "resume": ("resume", ":material/play_circle:"),
    "drill_down": ("drill down", ":material/zoom_in:"),
    "divergence": ("divergence", ":material/trending_up:"),
    "overfitting": ("overfitting", ":material/call_split:"),
    "leakage": ("possible leakage", ":material/water_drop:"),
    "dataset_too_small": ("dataset too small", ":material/grid_off:"),
}
#: How the switch names each autonomy level, and what the system then does (sql/30_procedures/95_autonomy.sql).
LEVELS = {
    "manual": ("Manual", "the system only suggests; you accept or dismiss"),
    "cruise": (
        "Cruise control",
        "the system accepts the non-destructive suggestions itself (clones, more epochs, resume, drill-down); stops"
        " and warnings wait for you",
    ),
    "autopilot": (
        "Autopilot",
        "the system accepts every suggestion with an action until its budget is spent, then stops the configs; what"
        " you stop, resume or clone by hand stays as you set it",
    ),
}
#: The autopilot's budget inputs: the unit each counts in.
BUDGET_UNITS = ("epochs", "seconds")
#: Past this many suggestions the panel scrolls (at this height, px) instead of pushing the curves down.
SCROLL_AFTER = 3
SCROLL_HEIGHT = 460
#: Characters that Markdown (and Streamlit's directives: ``:red[...]``, ``$...$``) would read as markup.
MARKUP = set("\\`*_[]$~:<>|#")


def ordered(suggestions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings first, then actions, each by kind (in ``SUGGESTION_KINDS`` order), then oldest first."""
    rank = {kind: position for position, kind in enumerate(SUGGESTION_KINDS)}
    return sorted(
        suggestions,
        key=lambda s: (s["category"] != "warning", rank.get(s["kind"], len(rank)), s["suggestion_id"]),
    )


def title(suggestions: list[dict[str, Any]]) -> str:
    """``Suggestions: 1 warning, 2 actions``."""
    warnings = sum(s["category"] == "warning" for s in suggestions)
    counts = [common.plural(warnings, "warning")] if warnings else []
    if len(suggestions) > warnings:
        counts.append(common.plural(len(suggestions) - warnings, "action"))
    return f"Suggestions: {', '.join(counts)}"


def evidence_text(evidence: dict[str, Any]) -> str:
    """The evidence's numbers on one line: ``gap 0.0534 · margin 0.0103 · best config 3``."""
    return " · ".join(f"{key.replace('_', ' ')} {shown(value)}" for key, value in evidence.items())


def shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(shown(item) for item in value)
    return common.number(value)


def plain(text: str) -> str:
    """``text`` shown as it is by st.markdown / st.caption (the server's words are not markup)."""
    return "".join(f"\\{char}" if char in MARKUP else char for char in text)


def scroll_height(count: int) -> int | Literal["content"]:
    return SCROLL_HEIGHT if count > SCROLL_AFTER else "content"


def explain_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A config's history with each accepted suggestion's detail leading with which it was and why (the table cuts
    long text): ``suggestion 12 (stop): at epoch 6 it trails config 3 ... · ran: UPDATE configs ...``."""
    return [
        {
            **event,
            "detail": f"suggestion {event['suggestion_id']} ({event['suggestion_kind']}): "
            f"{event['suggestion_reason']} · ran: {event['suggestion_sql']}",
        }
        if event["kind"] == "accepted" and event.get("suggestion_id") is not None
        else event
        for event in events
    ]


def accept(suggestion_id: int, kind: str) -> None:
    def run(conn: Connection) -> str:
        return f"suggestion {suggestion_id} ({kind}) accepted: {client.accept_suggestion(conn, suggestion_id)}"

    common.act(run, once=f"suggestion {suggestion_id}")


def dismiss(suggestion_id: int) -> None:
    common.act(lambda conn: client.dismiss_suggestion(conn, suggestion_id), once=f"suggestion {suggestion_id}")


def autonomy_text(current: dict[str, Any]) -> str:
    """What the workload's autonomy lets the system do now; on autopilot, what it has spent of which budget."""
    name, does = LEVELS[current["autonomy"]]
    text = f"{name}: {does}."
    if current["autonomy"] != "autopilot":
        return text
    spent = ", ".join(
        f"{current[f'{unit}_spent']} of {current[f'effective_budget_{unit}']} {unit}"
        for unit in BUDGET_UNITS
        if current[f"effective_budget_{unit}"] is not None
    )
    if current["budget_of"] is not None:
        return f"{text} A drill-down: it spends the budget of workload {current['budget_of']} ({spent} so far)."
    if current["budget_spent_at"] is not None:
        return f"{text} Budget spent ({spent}) at {current['budget_spent_at']:%H:%M:%S}: a new budget lets it go on."
    return f"{text} Spent so far: {spent}."


def apply_autonomy(workload_id: int) -> None:
    """The switch's Apply: its level, with the budget inputs' values on autopilot (empty: no bound of that kind)."""
    level = st.session_state[f"autonomy_{workload_id}"]
    budget = {unit: None for unit in BUDGET_UNITS}
    if level == "autopilot":
        budget = {unit: st.session_state.get(f"budget_{unit}_{workload_id}") for unit in BUDGET_UNITS}
    common.act(
        lambda conn: client.set_workload_autonomy(
            conn,
            workload_id,
            level,
            budget_epochs=None if budget["epochs"] is None else int(budget["epochs"]),
            budget_seconds=None if budget["seconds"] is None else int(budget["seconds"]),
        )
    )


def autonomy_switch(workload_id: int) -> None:
    """Manual / cruise / autopilot (with its budget) and Apply, following the workload's row until edited; what
    the level lets the system do below it. The server refuses what it must (an autopilot without a budget)."""
    current = common.read(client.workload_autonomy, workload_id)
    if current is None:
        return
    key = f"autonomy_{workload_id}"
    common.prefill(key, current["autonomy"])
    level_col, *budget_cols, apply_col = st.columns([4, 2, 2, 1], vertical_alignment="bottom")
    chosen = level_col.segmented_control(
        "Who accepts suggestions",
        AUTONOMY_LEVELS,
        key=key,
        format_func=lambda level: LEVELS[level][0],
        help="Switches live: the system acts from the next epoch's end.",
    )
    if chosen == "autopilot":
        for column, unit in zip(budget_cols, BUDGET_UNITS, strict=True):
            common.prefill(f"budget_{unit}_{workload_id}", current[f"budget_{unit}"])
            column.number_input(
                f"Budget, {unit}",
                min_value=1,
                step=1,
                value=None,
                key=f"budget_{unit}_{workload_id}",
                placeholder="no bound",
                help=f"{unit.capitalize()} the autopilot may spend from when it takes over (its clones and"
                " drill-downs count); empty: no bound of this kind",
            )
    apply_col.button(
        "Apply",
        key=f"apply_autonomy_{workload_id}",
        on_click=apply_autonomy,
        args=(workload_id,),
        disabled=chosen is None,
    )
    st.caption(plain(autonomy_text(current)))


def card(suggestion: dict[str, Any], linked: bool) -> None:
    """One suggestion: its kind, config (a link, if ``linked``), reason, evidence, expected effect, SQL and buttons
    keyed by its id. Accept only where there is SQL to run: a leakage or small-dataset warning is read and dismissed,
    while a divergence or overfitting warning offers the stop it calls for."""
    suggestion_id, config_id = suggestion["suggestion_id"], suggestion["config_id"]
    warning = suggestion["category"] == "warning"
    label, icon = KINDS.get(suggestion["kind"], (suggestion["kind"], ":material/lightbulb:"))
    with st.container(border=True):
        kind_col, text_col, button_col = st.columns([2, 8, 2])
        kind_col.badge(label, icon=icon, color="orange" if warning else "blue")
        if linked and config_id is not None:
            kind_col.page_link(
                common.CONFIG_PAGE,
                label=f"config {config_id}",
                query_params={"config": str(config_id)},
                help=f"config {config_id}'s page: its curve and history",
            )
        elif linked:
            kind_col.caption("the whole workload")
        text_col.markdown(plain(suggestion["reason"]))
        text_col.caption(
            f"{plain(evidence_text(suggestion['evidence']))}  \nexpected: {plain(suggestion['expected_effect'])}"
        )
        if suggestion["sql"]:
            with text_col.expander("SQL it runs", key=f"suggestion_sql_{suggestion_id}"):
                st.code(suggestion["sql"], language="sql", wrap_lines=True)
        if suggestion["sql"]:
            button_col.button(
                "Accept",
                key=f"accept_suggestion_{suggestion_id}",
                on_click=accept,
                args=(suggestion_id, suggestion["kind"]),
                type="primary",
                icon=":material/check:",
                width="stretch",
            )
        button_col.button(
            "Dismiss",
            key=f"dismiss_suggestion_{suggestion_id}",
            on_click=dismiss,
            args=(suggestion_id,),
            icon=":material/close:",
            width="stretch",
            help="Hide it: not suggested again "
            + ("for the workload" if config_id is None else f"for config {config_id} until its status changes"),
        )


def panel(workload_id: int, config_id: int | None = None) -> None:
    """The workload's autonomy switch and live suggestions (or ``config_id``'s own suggestions, on its page), read
    again on each refresh of the page's fragment; a one-line caption while there are none."""
    found = ordered(common.read(client.suggestions, workload_id, config_id))
    if config_id is None:
        autonomy_switch(workload_id)
    if not found:
        st.caption(
            ":material/tips_and_updates: No suggestions now: they appear at epoch ends, when the curves call for one."
        )
        return
    with (
        st.expander(
            title(found),
            expanded=True,
            key=f"suggestions_{workload_id}_{config_id}",
            icon=":material/tips_and_updates:",
        ),
        st.container(height=scroll_height(len(found)), border=False),
    ):
        for suggestion in found:
            card(suggestion, linked=config_id is None)
