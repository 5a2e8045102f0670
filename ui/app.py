"""The cerebro-db dashboard: `cerebro-db ui` runs it against the cluster ($CEREBRO_DSN or `cerebro-db dsn`)."""

import streamlit as st

st.set_page_config(page_title="cerebro-db", page_icon=":material/hub:", layout="wide")
st.navigation(
    [
        st.Page("pages/workloads.py", title="Workloads", icon=":material/list_alt:", default=True),
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:"),
        st.Page("pages/workload_detail.py", title="Workload detail", icon=":material/monitoring:", url_path="workload"),
        st.Page("pages/catalog.py", title="Models & datasets", icon=":material/dataset:"),
        st.Page("pages/tensorboard_logs.py", title="TensorBoard", icon=":material/insights:"),
    ]
).run()
