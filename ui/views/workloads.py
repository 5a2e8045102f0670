"""Every workload in one sortable table, filtered by status, owner and dataset; a row opens its page. Refreshed
while any workload is pending or running."""

from typing import Any

import common
import pandas as pd
import streamlit as st
import workload_list

from cerebro_db import client

TABLE = "workloads_table"
#: The ids of the table's rows as last shown: a selection names a row by its position in that table.
SHOWN = "workloads_shown"

COLUMNS = {
    "workload": st.column_config.NumberColumn("#", format="%d"),
    "name": st.column_config.TextColumn("Name"),
    "status": st.column_config.TextColumn("Status"),
    "progress": st.column_config.ProgressColumn("Progress", format="%.0f %%", min_value=0, max_value=100, width=110),
    "epochs": st.column_config.TextColumn("Epochs", help="epochs trained / planned (stopped configs count as done)"),
    "owner": st.column_config.TextColumn("Owner"),
    "dataset": st.column_config.TextColumn("Dataset"),
    "model": st.column_config.TextColumn("Model"),
    "procedure": st.column_config.TextColumn("Procedure"),
    "configs": st.column_config.TextColumn("Configs", help="active / all"),
    "best_val_accuracy": st.column_config.NumberColumn(
        "Best val acc.", format="%.1f %%", help="best validation accuracy"
    ),
    "time_left": st.column_config.NumberColumn("Time left", format="duration", help="an estimate, while running"),
    "created": st.column_config.DatetimeColumn("Created", format="distance"),
    "parent": st.column_config.NumberColumn("Parent", format="#%d", help="the workload this one drills down from"),
}


def open_selected() -> None:
    """A row chosen in the table as last shown opens that workload's page."""
    selection = st.session_state.get(TABLE)
    rows = selection["selection"]["rows"] if selection else []
    shown: list[int] = st.session_state.get(SHOWN, [])
    if rows and rows[0] < len(shown):
        st.switch_page(common.DETAIL_PAGE, query_params={"workload": str(shown[rows[0]])})


def overview(seen_every: int | None) -> None:
    open_selected()
    rows = common.read(client.workloads)
    if common.refresh_every(rows) != seen_every:  # something started or everything ended: the interval follows
        st.rerun()
    filters = st.columns(len(workload_list.FILTERS))
    chosen: dict[str, list[str]] = {}
    for column, (name, label) in zip(filters, workload_list.FILTERS.items(), strict=True):
        options = workload_list.filter_options(rows, name, st.session_state.get(f"filter_{name}", []))
        chosen[name] = column.multiselect(label, options, key=f"filter_{name}", placeholder="all")
    shown = workload_list.filtered(rows, chosen)
    total, active, done = st.columns(3)
    total.metric("Workloads", len(shown) if len(shown) == len(rows) else f"{len(shown)} of {len(rows)}")
    active.metric("Running", sum(row["status"] == "running" for row in shown))
    done.metric("Epochs trained", f"{sum(row['epochs_done'] for row in shown):,}")
    st.session_state[SHOWN] = [row["workload_id"] for row in shown]
    frame: pd.DataFrame = workload_list.table(shown)
    st.dataframe(
        frame,
        key=TABLE,
        on_select="rerun",
        selection_mode="single-row",
        column_config=COLUMNS,
        hide_index=True,
        placeholder="—",
    )
    st.caption("Tick a row's box to open its workload; click a column's header to sort by it.")


st.title("Workloads")
workloads: list[dict[str, Any]] = common.read(client.workloads)
if not workloads:
    st.info("No workloads yet — launch one.")
    st.page_link(common.LAUNCH_PAGE, label="Launch a workload", icon=":material/rocket_launch:")
else:
    every = common.refresh_every(workloads)
    st.fragment(overview, run_every=every)(every)
