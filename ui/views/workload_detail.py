"""One workload, live: learning curves, configs with stop / resume / clone / more epochs, segments, lineage."""

from typing import Any

import common
import comparison
import curves
import pandas as pd
import search_space_editor as editor
import streamlit as st
import suggestion_panel
from sqlalchemy import Connection

from cerebro_db import client
from cerebro_plpy import search_space


def change_workload(workload_id: int, status: str, seen: str) -> None:
    common.act(lambda conn: client.set_workload_status(conn, workload_id, status, seen))


def clone(config_id: int) -> None:
    overrides = {
        "lr": st.session_state[f"clone_lr_{config_id}"],
        "batch_size": int(st.session_state[f"clone_bs_{config_id}"]),
        "max_epochs": int(st.session_state[f"clone_epochs_{config_id}"]),
    }

    def run(conn: Connection) -> str:
        new = client.clone_config(conn, config_id, overrides)
        lr, batch_size, epochs = overrides["lr"], overrides["batch_size"], overrides["max_epochs"]
        shown = f"lr {common.number(lr)}, batch size {batch_size}, {common.plural(epochs, 'epoch')}"
        return f"config {new} cloned from config {config_id} ({shown})"

    common.act(run, once=f"clone {config_id} {overrides}")


def raise_epochs(config_id: int, seen_status: str, seen_max: int) -> None:
    new_max = int(st.session_state[f"epochs_{config_id}"])
    common.act(lambda conn: client.set_max_epochs(conn, config_id, new_max, seen_status, seen_max))


def add_config(workload_id: int, keys: list[str]) -> None:
    params = {key: editor.parse_param(st.session_state[f"add_{workload_id}_{key}"]) for key in keys}

    def run(conn: Connection) -> str:
        return f"config {client.add_config(conn, workload_id, params)} added"

    common.act(run, once=f"add {workload_id} {params}")


def searched(params: dict[str, Any], space: dict[str, Any]) -> str:
    return ", ".join(f"{key} {common.number(params[key])}" for key in editor.searched_keys(space) if key in params)


def learning_curves(workload_id: int, chosen: list[int]) -> None:
    """Loss and accuracy of the configs chosen in the leaderboard, a clone's line continuing its parent's."""
    if not common.learning_curves(f"curves_{workload_id}", chosen):
        st.info(
            "No epoch of the chosen configs has finished yet — curves appear as each epoch's validation commits."
            if chosen
            else "Tick configs in the leaderboard below to draw their curves."
        )


def leaderboard(row: dict[str, Any], configs: list[dict[str, Any]]) -> list[int]:
    """The configs as a sortable, filterable table whose ticked rows choose the curves; returns the chosen ids."""
    workload_id = row["workload_id"]
    filter_col, across_col = st.columns([3, 1], vertical_alignment="center")
    across = across_col.toggle(
        f"All workloads on `{row['dataset']}`",
        key=f"leaderboard_across_{workload_id}",
        help="List the configs of every workload on this dataset, to compare and draw them together.",
    )
    listed = common.read(client.dataset_configs, workload_id) if across else configs
    statuses = filter_col.pills(
        "status",
        sorted({config["status"] for config in listed}),
        selection_mode="multi",
        key=f"leaderboard_status_{workload_id}",
        label_visibility="collapsed",
    )
    shown = [config for config in listed if not statuses or config["status"] in statuses]
    frame = curves.table(shown, across=across)
    key = f"leaderboard_{workload_id}"
    memory = st.session_state.setdefault(
        f"curves_{workload_id}",
        {"shown": [], "chosen": [config["config_id"] for config in configs[: curves.DEFAULT_CURVES]]},
    )
    selected = st.session_state[key]["selection"]["rows"] if key in st.session_state else None
    ids = [int(config_id) for config_id in frame["config"]]
    memory["chosen"], positions = curves.reselect(memory["shown"], memory["chosen"], selected, ids)
    memory["shown"] = ids
    if positions != selected:  # rows moved: the ticks follow their configs
        st.session_state[key] = {"selection": {"rows": positions, "columns": [], "cells": []}}
    event = st.dataframe(
        frame,
        key=key,
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        placeholder="—",
        column_config=table_columns(frame),
    )
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False),
        file_name=f"workload-{workload_id}-configs.csv",
        mime="text/csv",
        key=f"leaderboard_csv_{workload_id}",
        icon=":material/download:",
        on_click="ignore",
    )
    return [memory["shown"][position] for position in event.selection.rows]


def table_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """Short numbers: percentages, 4 decimals for losses, 3 significant digits for numeric params."""
    columns: dict[str, Any] = {
        name: st.column_config.NumberColumn(name, format="%.3g")
        for name in frame.columns
        if pd.api.types.is_float_dtype(frame[name])
    }
    columns.update(
        {
            "config": st.column_config.NumberColumn("config", format="%d", pinned=True),
            "best val accuracy": st.column_config.NumberColumn("best val accuracy", format="percent"),
            "val loss": st.column_config.NumberColumn("val loss", format="%.4f"),
            "cloned from": st.column_config.NumberColumn("cloned from", format="%d"),
        }
    )
    return columns


def config_row(
    config: dict[str, Any], space: dict[str, Any], widths: list[int], workload_epochs: int, training: bool
) -> None:
    """One config's row; every widget is keyed by the config id, so it stays with its config when the ranking moves."""
    config_id, status = config["config_id"], config["status"]
    cells = st.columns(widths, vertical_alignment="center")
    cells[0].page_link(
        common.CONFIG_PAGE,
        label=f"{config_id}" + (f" ← {config['cloned_from']}" if config["cloned_from"] else ""),
        query_params={"config": str(config_id)},
        help=f"config {config_id}'s page: its lineage, history and units",
    )
    cells[1].markdown(searched(config["params"], space) or "defaults", help=str(config["params"]))
    with cells[2]:
        common.status_badge("training" if training and status in ("pending", "running") else status)
    cells[3].markdown(f"{config['epochs_done']} / {config['max_epochs']}")
    cells[4].markdown(common.percent(config["best_val_metric"]))
    cells[5].markdown("—" if config["best_val_loss"] is None else f"{config['best_val_loss']:.4f}")
    stop_col, clone_col, epochs_col = cells[6].columns(3)
    common.stop_or_resume(stop_col, config)
    with clone_col.popover("Clone", key=f"clone_popover_{config_id}", on_change="rerun"):
        st.number_input("lr", value=float(config["params"].get("lr", 0.001)), format="%g", key=f"clone_lr_{config_id}")
        st.number_input(
            "batch size", min_value=1, value=int(config["params"].get("batch_size", 64)), key=f"clone_bs_{config_id}"
        )
        st.number_input(
            "max epochs",
            min_value=config["epochs_done"] + 1,  # the clone starts at the source's epochs
            value=editor.clone_max_epochs(config["epochs_done"], config["max_epochs"], workload_epochs),
            key=f"clone_epochs_{config_id}",
        )
        st.button("Clone config", key=f"clone_{config_id}", on_click=clone, args=(config_id,), type="primary")
    with epochs_col.popover("Epochs", key=f"epochs_popover_{config_id}", on_change="rerun"):
        st.number_input(
            "max epochs",
            min_value=max(config["epochs_done"], 1),
            value=config["max_epochs"] + 1,
            key=f"epochs_{config_id}",
        )
        st.button(
            "Set max epochs",
            key=f"set_epochs_{config_id}",
            on_click=raise_epochs,
            args=(config_id, status, config["max_epochs"]),
            type="primary",
        )
    if config["error"]:
        st.caption(f":red[config {config_id} failed: {config['error']}]")


def header(row: dict[str, Any]) -> None:
    workload_id = row["workload_id"]
    title_col, badge_col, action_col = st.columns([6, 1, 1], vertical_alignment="center")
    title_col.title(f"#{workload_id} {row['name'] or 'unnamed'}")
    with badge_col:
        common.status_badge(row["status"])
    if row["status"] == "running":
        action_col.button(
            "Stop all",
            key=f"stop_all_{workload_id}",
            on_click=change_workload,
            args=(workload_id, "stopped", "running"),
            icon=":material/stop:",
        )
    elif row["status"] == "stopped":
        action_col.button(
            "Resume all",
            key=f"resume_all_{workload_id}",
            on_click=change_workload,
            args=(workload_id, "running", "stopped"),
            icon=":material/play_arrow:",
        )
    st.caption(
        f"{row['owner']} · model `{row['model']}` · {row['procedure']} · dataset `{row['dataset']}` · "
        f"{common.plural(row['max_epochs'], 'epoch')} · created {row['created_at']:%Y-%m-%d %H:%M}"
    )
    if row["description"]:
        st.markdown(row["description"])


def live(row: dict[str, Any], configs: list[dict[str, Any]]) -> None:
    """Progress, suggestions, curves, the configs and the segments."""
    workload_id = row["workload_id"]
    activity = common.read(client.segment_activity)
    header(row)
    common.show_flashes()
    space = row["search_space"]
    done, best, configs_metric, eta = st.columns(4)
    done.metric("Epochs", f"{row['epochs_done']} / {row['epochs_planned']}")
    best.metric("Best val accuracy", common.percent(row["best_val_metric"]))
    configs_metric.metric("Configs active", f"{row['configs_active']} of {row['configs']}")
    eta.metric("Time left (estimate)", common.duration(row["eta"]) if row["status"] == "running" else "—")
    st.progress(min(row["epochs_done"] / max(row["epochs_planned"], 1), 1.0))
    suggestion_panel.panel(workload_id)

    st.subheader("Learning curves")
    chart_area = st.container()  # filled below the leaderboard, whose selection it draws
    st.subheader("Leaderboard")
    chosen = leaderboard(row, configs)
    with chart_area:
        learning_curves(workload_id, chosen)

    st.subheader("Steer configs")
    st.caption("By config id, so a row never moves under an open popover when the ranking changes.")
    widths = [1, 3, 2, 1, 2, 2, 5]
    for cell, label in zip(
        st.columns(widths),
        ["config", "searched params", "status", "epochs", "best val acc", "val loss", ""],
        strict=True,
    ):
        cell.caption(label)
    training = {segment["config_id"] for segment in activity}
    for config in sorted(configs, key=lambda config: config["config_id"]):
        config_row(config, space, widths, row["max_epochs"], config["config_id"] in training)

    st.subheader("Segments now")
    if not common.read(client.scheduler_alive):
        st.warning(
            "No scheduler is running: nothing trains. Start one with `cerebro-db scheduler` (or `cerebro-db up`)."
        )
    for segment_col, segment in zip(st.columns(4), activity, strict=False):
        if segment["config_id"] is None:
            segment_col.metric(f"Segment {segment['segment']}", "idle")
        else:
            mine = "" if segment["workload_id"] == workload_id else f" (workload {segment['workload_id']})"
            segment_col.metric(
                f"Segment {segment['segment']}",
                f"config {segment['config_id']}",
                f"epoch {segment['epoch']} · {common.duration(segment['running_s'])}{mine}",
                delta_color="off",
            )


def steer(row: dict[str, Any], configs: list[dict[str, Any]]) -> None:
    """Add a config, and drill down around chosen configs."""
    workload_id, space = row["workload_id"], row["search_space"]
    add_col, drill_col = st.columns(2)
    with add_col.container(border=True):
        st.markdown("**Add a config**")
        best = configs[0]["params"] if configs else {}  # the prefill follows the best config until edited
        keys = list(space)
        for key in keys:
            common.prefill(f"add_{workload_id}_{key}", common.number(best[key]) if key in best else "")
            st.text_input(key, key=f"add_{workload_id}_{key}")
        st.button(
            "Add config", key=f"add_{workload_id}", on_click=add_config, args=(workload_id, keys), icon=":material/add:"
        )
    with drill_col.container(border=True):
        st.markdown("**Drill down**")
        st.caption("A new workload searching around the chosen configs, warm-started from this one's best weights.")
        common.prefill(
            f"drill_{workload_id}",
            [config["config_id"] for config in configs[:2] if config["best_val_metric"] is not None],
        )
        ids = [config["config_id"] for config in configs]
        chosen = st.multiselect("Around configs", ids, key=f"drill_{workload_id}")
        if st.button("Drill down", key=f"drill_down_{workload_id}", disabled=not chosen, icon=":material/zoom_in:"):
            selected = [config["params"] for config in configs if config["config_id"] in chosen]
            st.session_state["launch_prefill"] = {
                "dataset": row["dataset"],
                "model": row["model"],
                "search_space": search_space.refine(space, selected) or space,
                "procedure": "random",
                "num_configs": 4,
                "max_epochs": row["max_epochs"],
                "name": f"drill-down of #{workload_id}",
                "parent_workload": workload_id,
            }
            st.switch_page(common.LAUNCH_PAGE)


def lineage(workload_id: int) -> None:
    st.subheader("Lineage")
    found = common.read(client.lineage, workload_id)
    if found["parent"] is None and not found["children"] and not found["derived"]:
        st.caption("A workload of its own: no parent, no drill-downs, no clones yet.")
        return
    if found["parent"] is not None:
        st.page_link(
            common.DETAIL_PAGE,
            label=f"Parent: workload #{found['parent']}",
            icon=":material/north_west:",
            query_params={"workload": str(found["parent"])},
        )
    for child in found["children"]:
        st.page_link(
            common.DETAIL_PAGE,
            label=f"Drill-down: workload #{child['workload_id']} {child['name'] or ''} ({child['status']})",
            icon=":material/south_east:",
            query_params={"workload": str(child["workload_id"])},
        )
    for config in found["derived"]:
        source = f"config {config['cloned_from']}"
        if config["origin"] == "warm start":
            source += f" of workload #{config['cloned_from_workload']}"
        st.markdown(f"- config {config['config_id']}: {config['origin']} from {source}")


def page(workload_id: int, seen_status: str, seen_every: int | None) -> None:
    """The whole page but the sidebar, as a fragment refreshed every ``seen_every`` seconds; when the workload's
    status or whether to refresh changed since, the whole app reruns: the sidebar and the interval follow."""
    row = common.read(client.workload, workload_id)
    assert row is not None
    configs = common.read(client.configs, workload_id)
    if (row["status"], common.refresh_every(configs)) != (seen_status, seen_every):
        st.rerun()
    live(row, configs)
    comparison.section(row, configs)
    steer(row, configs)
    lineage(workload_id)


rows = {row["workload_id"]: row for row in common.read(client.workloads)}
if not rows:
    st.title("Workload")
    st.info("No workloads yet — launch one.")
    st.page_link(common.LAUNCH_PAGE, label="Launch a workload", icon=":material/rocket_launch:")
    st.stop()
requested = st.query_params.get("workload", "")
current = int(requested) if requested.isdigit() and int(requested) in rows else next(iter(rows))
workload_id: int = st.sidebar.selectbox(
    "Workload",
    list(rows),
    index=list(rows).index(current),
    format_func=lambda w: f"#{w} {rows[w]['name'] or 'unnamed'} ({rows[w]['status']})",
)
st.query_params["workload"] = str(workload_id)


every = common.refresh_every(common.read(client.configs, workload_id))
st.sidebar.caption(
    f"Live: refreshing every {every} s." if every else "Not refreshing: nothing in this workload is pending or running."
)
st.fragment(page, run_every=every)(workload_id, rows[workload_id]["status"], every)
