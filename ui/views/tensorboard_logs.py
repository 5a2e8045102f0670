"""TensorBoard inside the dashboard: one TensorBoard per dashboard server on the exported event files, which are
rewritten as the chosen workloads' epochs finish."""

import sys
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import common
import streamlit as st

from cerebro_db import client, tensorboard, tensorboard_server

#: Seconds a page run waits for a starting TensorBoard (it imports TensorFlow first).
STARTUP_S = 120
KEY = "tensorboard_workloads"


@st.cache_resource(show_spinner=False)
def keeper(logdir: str, port: int, host: str | None, address: str | None) -> tensorboard_server.Keeper:
    """Per dashboard server, not per session or run: every viewer shares the one TensorBoard."""
    return tensorboard_server.Keeper(Path(logdir), tensorboard_server.Settings(port, host, address))


@st.cache_resource(show_spinner=False)
def exporter(logdir: str) -> tensorboard.Exporter:
    return tensorboard.Exporter(Path(logdir))


def label(row: client.Row) -> str:
    """``#12 my-name (running)``."""
    return " ".join(filter(None, [f"#{row['workload_id']}", row["name"], f"({row['status']})"]))


@st.fragment(run_every=tensorboard_server.RELOAD_S)
def keep_exported(chosen: list[int], logdir: Path) -> None:
    """Export the chosen workloads now and again whenever one's finished epochs grew."""
    rows = [row for row in common.read(client.workloads) if row["workload_id"] in chosen]
    try:
        with st.spinner("writing event files ..."):
            common.read(exporter(str(logdir)).refresh, rows)
    except OSError as error:
        st.error(f"Could not write the event files into {logdir}: {error}")
        return
    epochs = sum(row["epochs_done"] for row in rows)
    st.caption(
        f"{common.plural(epochs, 'epoch')} of {common.plural(len(rows), 'workload')} exported to `{logdir}`, "
        f"again as epochs finish; TensorBoard reloads every {tensorboard_server.RELOAD_S} s."
    )


def manual(chosen: list[int], logdir: Path) -> None:
    with st.expander("Your own TensorBoard instead"):
        binaries = Path(sys.executable).parent
        workloads = [str(workload) for workload in chosen] or ["<workload>"]
        exports = [f"{binaries / 'cerebro-db'} tensorboard {workload}" for workload in workloads]
        st.code("\n".join([*exports, f"{binaries / 'tensorboard'} --logdir {logdir}"]), language="bash")
        st.caption("Run the export again to pick up new epochs.")


st.title("TensorBoard")
rows = common.read(client.workloads)
if not rows:
    st.info("No workloads yet — launch one, then come back to see its curves in TensorBoard.")
    st.stop()
by_id = {row["workload_id"]: row for row in rows}
if KEY not in st.session_state:  # first visit: the workload the link names (?workload=12), else the newest
    asked = st.query_params.get("workload", "")
    st.session_state[KEY] = [int(asked)] if asked.isdigit() and int(asked) in by_id else [rows[0]["workload_id"]]
st.session_state[KEY] = [workload for workload in st.session_state[KEY] if workload in by_id]  # deleted ones
chosen = st.multiselect(
    "Workloads",
    list(by_id),
    format_func=lambda workload: label(by_id[workload]),
    key=KEY,
    help="TensorBoard compares the runs of all chosen workloads: one run per config and split, "
    "named `w<workload>-<name>/config-<config>/<split>`.",
)
logdir = tensorboard.default_logdir()
keep_exported(chosen, logdir)

try:
    settings = tensorboard_server.Settings.from_env()
    board = keeper(str(logdir), settings.port, settings.host, settings.address).ensure()
except (ValueError, tensorboard_server.PortTaken) as error:
    st.error(str(error))
    manual(chosen, logdir)
    st.stop()
if board is None:
    st.caption(f"Port {settings.port} already serves a TensorBoard on `{logdir}`: shown below.")
elif not board.serving():
    with st.spinner("starting TensorBoard ..."):
        ready = board.wait_until_serving(STARTUP_S)
    if not ready:
        if board.running():
            st.warning(f"TensorBoard has not answered within {STARTUP_S} s; it is still starting.")
            st.button("Check again", icon=":material/refresh:")
        else:
            st.error("TensorBoard exited (the next page run starts it again). The end of its output:")
            st.code(board.output(), language="text")
        manual(chosen, logdir)
        st.stop()
query = f"?{urlencode({'runFilter': tensorboard.run_filter(chosen)})}" if chosen else ""
board_url = settings.url(urlsplit(st.context.url or "").hostname)
st.iframe(board_url + query, height=800, alt="TensorBoard: the chosen workloads' learning curves")
st.caption(
    f"TensorBoard at {board_url}, listening on {settings.address or 'localhost only'}. Reaching the dashboard "
    f"from another machine? Forward TensorBoard's port as well as the dashboard's "
    f"(`ssh -L 8501:localhost:8501 -L {settings.port}:localhost:{settings.port} <host>`), or start "
    f"`cerebro-db ui` with `{tensorboard_server.ADDRESS_ENV}=0.0.0.0` (and `{tensorboard_server.HOST_ENV}` if "
    "browsers know this machine by another name than the dashboard's URL says)."
)
manual(chosen, logdir)
