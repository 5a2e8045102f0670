"""The cerebro-db dashboard: `cerebro-db ui` runs it against the cluster ($CEREBRO_DSN or `cerebro-db dsn`)."""

import streamlit as st

# The pages live in views/, not pages/: a pages/ folder beside this script would make Streamlit
# ignore st.navigation and run each page on its own (without this file's set-up).

st.set_page_config(page_title="cerebro-db", page_icon=":material/hub:", layout="wide")
st.navigation(
    [
        st.Page("views/workloads.py", title="Workloads", icon=":material/list_alt:", default=True),
        st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:"),
        st.Page("views/workload_detail.py", title="Workload detail", icon=":material/monitoring:", url_path="workload"),
        st.Page("views/config.py", title="Config", icon=":material/tune:", url_path="config"),
        st.Page("views/catalog.py", title="Models & datasets", icon=":material/dataset:"),
        st.Page("views/tensorboard_logs.py", title="TensorBoard", icon=":material/insights:"),
    ]
).run()
