"""Every workload with its progress, best metric and a link into it; refreshed while any trains."""

import common
import streamlit as st

from cerebro_db import client

st.title("Workloads")


@st.fragment(run_every=5)
def overview() -> None:
    rows = common.read(client.workloads)
    if not rows:
        st.info("No workloads yet — launch one.")
        st.page_link(common.LAUNCH_PAGE, label="Launch a workload", icon=":material/rocket_launch:")
        return
    running = [row for row in rows if row["status"] == "running"]
    total, active, done = st.columns(3)
    total.metric("Workloads", len(rows))
    active.metric("Running", len(running))
    done.metric("Epochs trained", f"{sum(row['epochs_done'] for row in rows):,}")
    for row in rows:
        with st.container(border=True):
            title, status, link = st.columns([6, 1, 1], vertical_alignment="center")
            title.markdown(f"**#{row['workload_id']} {row['name'] or 'unnamed'}**")
            with status:
                common.status_badge(row["status"])
            link.page_link(
                common.DETAIL_PAGE,
                label="Open",
                icon=":material/arrow_forward:",
                query_params={"workload": str(row["workload_id"])},
            )
            st.caption(
                f"{row['owner']} · model `{row['model']}` · {row['procedure']} · dataset `{row['dataset']}` · "
                f"created {row['created_at']:%Y-%m-%d %H:%M}"
                + (f" · drill-down of #{row['parent_workload_id']}" if row["parent_workload_id"] else "")
            )
            planned = max(row["epochs_planned"], 1)
            st.progress(
                min(row["epochs_done"] / planned, 1.0),
                text=f"{row['epochs_done']} / {common.plural(row['epochs_planned'], 'epoch')}",
            )
            configs, best, eta = st.columns(3)
            configs.metric(
                "Configs",
                row["configs"],
                help=f"{row['configs_active']} active, {row['configs_completed']} completed, "
                f"{row['configs_stopped']} stopped, {row['configs_failed']} failed",
            )
            best.metric("Best val accuracy", common.percent(row["best_val_metric"]))
            eta.metric("Time left (estimate)", common.duration(row["eta"]) if row["status"] == "running" else "—")


overview()
