"""How to look at a workload in TensorBoard: `cerebro-db tensorboard <workload>` writes the event files."""

import sys
from pathlib import Path

import common
import streamlit as st

from cerebro_db import client, tensorboard

st.title("TensorBoard")
st.markdown(
    "The dashboard's learning curves are live; for TensorBoard's own tools (smoothing, zoom, comparing runs), "
    "export a workload's `epoch_metrics` as event files — one run per config and split — and point TensorBoard "
    "at them:"
)
rows = common.read(client.workloads)
if not rows:
    st.info("No workloads yet — launch one, then come back to export its curves.")
    st.stop()
workload_id = st.selectbox(
    "Workload", [row["workload_id"] for row in rows], format_func=lambda w: f"#{w}", key="tensorboard_workload"
)
logdir = tensorboard.default_logdir()
binaries = Path(sys.executable).parent
st.code(
    f"{binaries / 'cerebro-db'} tensorboard {workload_id}\n{binaries / 'tensorboard'} --logdir {logdir}",
    language="bash",
)
st.caption("Then open http://localhost:6006. Run the export again to pick up new epochs.")
if st.button("Export now", icon=":material/download:"):
    try:
        with st.spinner("writing event files ..."):
            written = common.read(tensorboard.export, workload_id, logdir)
    except OSError as error:
        st.error(f"Could not write the event files: {error}")
    else:
        st.success(f"event files written to {written}")
