"""One config: its params, lineage, history (who stopped, resumed or pruned it, and why), units and state size."""

from typing import Any

import common
import config_details as details
import streamlit as st
import suggestion_panel

from cerebro_db import client


def header(config: dict[str, Any], training: bool) -> None:
    config_id, status = config["config_id"], config["status"]
    title_col, badge_col, action_col = st.columns([6, 1, 1], vertical_alignment="center")
    title_col.title(f"Config {config_id}")
    with badge_col:
        common.status_badge("training" if training and status in ("pending", "running") else status)
    common.stop_or_resume(action_col, config, icons=True)
    st.page_link(
        common.DETAIL_PAGE,
        label=f"Workload #{config['workload_id']} {config['workload_name'] or 'unnamed'}",
        icon=":material/monitoring:",
        query_params={"workload": str(config["workload_id"])},
    )
    st.caption(f"created by {config['created_by']} · {config['created_at']:%Y-%m-%d %H:%M}")
    if config["error"]:
        st.error(f"config {config_id} failed: {config['error']}")


def summary(config: dict[str, Any]) -> None:
    epochs, best, loss, state = st.columns(4)
    epochs.metric("Epochs", f"{config['epochs_done']} / {config['max_epochs']}")
    best.metric(
        "Best val accuracy",
        common.percent(config["best_val_metric"]),
        None if config["best_epoch"] is None else f"epoch {config['best_epoch']} · rank {config['rank']}",
        delta_color="off",
        delta_arrow="off",
    )
    loss.metric("Val loss at best", "—" if config["best_val_loss"] is None else f"{config['best_val_loss']:.4f}")
    state.metric("State size", "—" if config["state_bytes"] is None else common.size(config["state_bytes"]))


def curve(config_id: int) -> None:
    """The config's learning curve, its ancestors' epochs included."""
    if not common.learning_curves(f"config_curves_{config_id}", [config_id]):
        st.info("No epoch has finished yet — the curve appears as each epoch's validation commits.")


def config_link(row: dict[str, Any], prefix: str) -> None:
    where = (
        "" if row["origin"] == "clone" else f" of workload #{row['workload_id']} {row['workload_name'] or 'unnamed'}"
    )
    st.page_link(
        common.CONFIG_PAGE,
        label=f"{prefix}: config {row['config_id']}{where} ({row['status']})",
        icon=":material/north_west:" if prefix.startswith("Parent") else ":material/south_east:",
        query_params={"config": str(row["config_id"])},
    )


def lineage(config_id: int) -> None:
    st.subheader("Lineage")
    relatives = common.read(client.config_lineage, config_id)
    if not relatives:
        st.caption("A config of its workload's own search: no parent, no clones or warm starts made from it yet.")
    for row in relatives:
        if row["relation"] == "parent":
            config_link(row, "Parent (cloned from)" if row["origin"] == "clone" else "Parent (warm-started from)")
    for row in relatives:
        if row["relation"] == "clone":
            config_link(row, "Clone")
        elif row["relation"] == "warm start":
            config_link(row, "Warm start")


def history(config_id: int) -> None:
    st.subheader("History")
    st.dataframe(
        details.events_table(suggestion_panel.explain_events(common.read(client.config_events, config_id))),
        hide_index=True,
        column_config={
            "at": st.column_config.DatetimeColumn("at", format="YYYY-MM-DD HH:mm:ss"),
            "epochs_done": st.column_config.NumberColumn("epochs done"),
            "actor": st.column_config.TextColumn("by", help="cerebro: the system (a procedure, the scheduler)"),
            "detail": st.column_config.TextColumn("why", width="large"),
        },
    )


def units(config_id: int) -> None:
    st.subheader("Units")
    found = common.read(client.config_units, config_id)
    if not found:
        st.info("No unit has committed yet: each hop of the config to a segment appears here as it commits.")
        return
    st.caption(f"{common.plural(len(found), 'unit')}: one per hop to a segment; seconds per phase.")
    seconds = {column: st.column_config.NumberColumn(name, format="%.3f") for column, name in details.PHASES.items()}
    st.dataframe(
        details.units_table(found),
        hide_index=True,
        column_config={
            **seconds,
            "train_loss": st.column_config.NumberColumn("train loss", format="%.4f"),
            "started_at": st.column_config.DatetimeColumn("started", format="MM-DD HH:mm:ss"),
            "finished_at": st.column_config.DatetimeColumn("finished", format="MM-DD HH:mm:ss"),
            "backend_pid": st.column_config.NumberColumn("backend pid", format="%d"),
        },
    )
    st.markdown("**Time per phase**, all units together")
    st.dataframe(
        details.phase_totals(found),
        hide_index=True,
        column_config={
            "seconds": st.column_config.NumberColumn("total s", format="%.2f"),
            "share": st.column_config.ProgressColumn("share", format="percent", min_value=0, max_value=1),
        },
        width=420,
    )


def page(config_id: int, seen_status: str, seen_every: int | None) -> None:
    """The page but the sidebar, as a fragment refreshed every ``seen_every`` seconds; when the config's status or
    whether to refresh changed since (or it is gone), the whole app reruns: the sidebar and the interval follow."""
    config = common.read(client.config, config_id)
    if config is None or (config["status"], common.refresh_every([config])) != (seen_status, seen_every):
        st.rerun()
    training = any(segment["config_id"] == config_id for segment in common.read(client.segment_activity))
    header(config, training)
    common.show_flashes()
    summary(config)
    suggestion_panel.panel(config["workload_id"], config_id)
    st.subheader("Learning curve")
    curve(config_id)
    params_col, lineage_col = st.columns(2)
    with params_col:
        st.subheader("Params")
        st.dataframe(details.params_table(config["params"]), hide_index=True)
    with lineage_col:
        lineage(config_id)
    history(config_id)
    units(config_id)


choices = {row["config_id"]: row for row in common.read(client.all_configs)}
requested = st.query_params.get("config", "")
known = requested.isdigit() and int(requested) in choices
if not choices and not requested:
    st.title("Config")
    st.info("No configs yet — launch a workload.")
    st.page_link(common.LAUNCH_PAGE, label="Launch a workload", icon=":material/rocket_launch:")
    st.stop()
chosen: int | None = st.sidebar.selectbox(
    "Config",
    list(choices),
    index=list(choices).index(int(requested)) if known else None if requested else 0,
    format_func=lambda c: (
        f"{c} · #{choices[c]['workload_id']} {choices[c]['workload_name'] or 'unnamed'} ({choices[c]['status']})"
    ),
    placeholder="Choose a config",
)
if chosen is None:
    st.title("Config")
    st.warning(f"There is no config {requested!r} of yours to show: it does not exist, or it is not yours.")
    if choices:
        st.caption("Choose one of yours in the sidebar.")
    st.stop()
st.query_params["config"] = str(chosen)

every = common.refresh_every([choices[chosen]])
st.sidebar.caption(
    f"Live: refreshing every {every} s." if every else "Not refreshing: the config is not pending or running."
)
st.fragment(page, run_every=every)(chosen, choices[chosen]["status"], every)
