"""What every page shares: the engine, reads that show errors instead of tracebacks, actions, formats."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import curves
import streamlit as st
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from streamlit.delta_generator import DeltaGenerator

from cerebro_db import client, connection, migrate
from cerebro_db.cluster import ClusterError

T = TypeVar("T")

#: A repeat of the same create action within this many seconds is a double click, not a new request.
DOUBLE_CLICK_S = 10.0

DETAIL_PAGE = "views/workload_detail.py"
CONFIG_PAGE = "views/config.py"
LAUNCH_PAGE = "views/launch.py"

#: Seconds between refreshes of a page while anything it shows is pending or running.
REFRESH_S = 2

STATUS_COLORS = {
    "running": "blue",
    "training": "violet",
    "pending": "gray",
    "stopped": "orange",
    "completed": "green",
    "failed": "red",
}


@st.cache_resource(show_spinner=False)
def _engine(dsn: str) -> Engine:
    """The engine, once the database's schema is this version's (a refusal is not cached: the next run checks)."""
    engine = connection.make_engine(dsn)
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection  # psycopg's own: the check is the scheduler's too
            assert driver is not None  # a connection just made is valid
            migrate.check_schema_version(driver)
    except migrate.SchemaVersionError:
        engine.dispose()
        raise
    return engine


def engine() -> Engine:
    return _engine(connection.default_dsn())


def read(query: Callable[..., T], *args: Any) -> T:
    """``query(conn, *args)`` in its own short read; a database problem stops the page with a message."""
    try:
        with engine().connect() as conn:
            return query(conn, *args)
    except ClusterError as error:
        st.error(f"No database to show: {error}. Set CEREBRO_DSN or start the cluster with `cerebro-db up`.")
    except migrate.SchemaVersionError as error:
        st.error(f"The dashboard cannot use this database: {error}.")
    except DBAPIError as error:
        st.error(f"The database refused a read: {client.database_message(error)}")
    st.stop()


def act(do: Callable[[Connection], str], *, once: str | None = None) -> bool:
    """Run an action in one transaction and flash its outcome; ``once`` names a create action to dedupe."""
    recent: dict[str, tuple[float, str]] = st.session_state.setdefault("recent_actions", {})
    if once is not None and once in recent and time.monotonic() - recent[once][0] < DOUBLE_CLICK_S:
        flash("info", f"{recent[once][1]} (the repeated click did nothing)")
        return False
    try:
        with client.transaction(engine()) as conn:
            message = do(conn)
    except client.ActionError as error:
        flash("error", str(error))
        return False
    if once is not None:
        recent[once] = (time.monotonic(), message)
    flash("success", message)
    return True


def change_status(config_id: int, status: str, seen: str) -> None:
    """Stop (``stopped``) or resume (``running``) a config the page showed as ``seen`` (a button's callback)."""
    act(lambda conn: client.set_config_status(conn, config_id, status, seen))


def stop_or_resume(where: DeltaGenerator, config: dict[str, Any], *, icons: bool = False) -> None:
    """The config's Stop button while it may train, Resume while stopped with epochs left, in ``where`` (a
    column); keyed by the config's id, so it stays with its config wherever the page lists it."""
    config_id, status = config["config_id"], config["status"]
    if status in ("pending", "running"):
        where.button(
            "Stop",
            key=f"stop_{config_id}",
            on_click=change_status,
            args=(config_id, "stopped", status),
            icon=":material/stop:" if icons else None,
        )
    elif status == "stopped" and config["epochs_done"] < config["max_epochs"]:
        where.button(
            "Resume",
            key=f"resume_{config_id}",
            on_click=change_status,
            args=(config_id, "running", status),
            icon=":material/play_arrow:" if icons else None,
        )


def flash(kind: str, message: str) -> None:
    """A message shown by the next :func:`show_flashes` (actions run in callbacks, before the page renders)."""
    st.session_state.setdefault("flashes", []).append((kind, message))


def show_flashes() -> None:
    """Outcomes as toasts that last; errors stay on the page (refreshes included) until dismissed."""
    errors: dict[int, str] = st.session_state.setdefault("errors", {})
    for kind, message in st.session_state.pop("flashes", []):
        if kind == "error":
            errors[max(errors, default=0) + 1] = message
        else:
            st.toast(message, icon=":material/check_circle:" if kind == "success" else None, duration="long")
    for error_id, message in list(errors.items()):
        text_col, dismiss_col = st.columns([12, 1], vertical_alignment="center")
        text_col.error(message)
        dismiss_col.button("Dismiss", key=f"dismiss_error_{error_id}", on_click=dismiss, args=(error_id,))


def dismiss(error_id: int) -> None:
    st.session_state["errors"].pop(error_id, None)


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def number(value: Any) -> str:
    """Floats with 3 significant digits (``0.000417``), anything else as it is."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def prefill(key: str, value: Any) -> None:
    """Put ``value`` into the widget ``key`` (created without a value) unless the user has changed what was put
    there last: a prefill follows the data until it is edited."""
    last: dict[str, Any] = st.session_state.setdefault("prefills", {})
    if key not in st.session_state or st.session_state[key] == last.get(key):
        st.session_state[key] = value
    last[key] = value


def refresh_every(configs: list[dict[str, Any]]) -> int | None:
    """Refresh while anything is pending or running (a resume or more epochs restarts it), else not at all."""
    return REFRESH_S if any(config["status"] in ("pending", "running") for config in configs) else None


def learning_curves(key: str, config_ids: list[int]) -> bool:
    """Loss and accuracy of ``config_ids`` side by side, a clone's line continuing its ancestors', with the x-axis
    and log-scale switches keyed by ``key``; False, drawing no chart, while none of them has finished an epoch."""
    x_col, log_col = st.columns([3, 1], vertical_alignment="center")
    x: curves.Axis = (
        x_col.segmented_control(
            "x axis", ["epoch", "wall clock"], default="epoch", key=f"{key}_x", label_visibility="collapsed"
        )
        or "epoch"
    )
    log = log_col.toggle("log scale", key=f"{key}_log")
    rows = read(client.curves_with_ancestors, config_ids) if config_ids else []
    if not rows:
        return False
    loss_col, metric_col = st.columns(2)
    loss_col.altair_chart(curves.chart(rows, "loss", x=x, log=log), width="stretch")
    metric_col.altair_chart(curves.chart(rows, "metric", x=x, log=log), width="stretch")
    st.caption(
        "Drag to pan, scroll to zoom, double-click to reset; click a config in a legend to isolate it. "
        "A clone's line continues its parent's epochs (faded)."
    )
    return True


def status_badge(status: str) -> None:
    st.badge(status, color=STATUS_COLORS.get(status, "gray"))  # type: ignore[arg-type]


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def duration(value: timedelta | float | None) -> str:
    """``1 h 04 min``, ``3 min 12 s``, ``8 s``."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def size(num_bytes: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    power = 0
    while num_bytes >= 1024 and power < len(units) - 1:
        num_bytes /= 1024
        power += 1
    return f"{num_bytes:,.0f} B" if power == 0 else f"{num_bytes:,.1f} {units[power]}"
