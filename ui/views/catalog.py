"""The model roster and the prepared datasets with their shards."""

import common
import pandas as pd
import streamlit as st

from cerebro_db import dashboard

st.title("Models & datasets")

st.subheader("Roster")
for model, (doc, params) in common.read(dashboard.roster).items():
    with st.expander(f"**{model}** — {doc}"):
        st.dataframe(
            pd.DataFrame(
                [
                    {"parameter": p.name, "type": p.type, "default": str(p.default), "allowed": p.allowed, "doc": p.doc}
                    for p in params
                ]
            ),
            hide_index=True,
            width="stretch",
        )

st.subheader("Prepared datasets")
found = common.read(dashboard.datasets)
if not found:
    st.info("No prepared datasets yet — prepare one on the Launch page (or `SELECT prepare_dataset(...)`).")
for row in found:
    with st.container(border=True):
        st.markdown(f"**{row['name']}** · from `{row['source_table']}` · label `{row['label_column']}`")
        st.caption(
            f"{row['train_rows']:,} training / {row['validation_rows']:,} validation rows "
            f"({100 * row['validation_fraction']:.0f} % validation) · {row['num_classes']} classes · "
            f"features {'×'.join(map(str, row['feature_shape']))} · owner {row['owner']} · "
            f"prepared {row['created_at']:%Y-%m-%d %H:%M}"
        )
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "segment": shard["segment"],
                        "split": shard["split"],
                        "buffers": shard["buffers"],
                        "rows": f"{shard['rows']:,}",
                        "size": common.size(shard["bytes"]),
                    }
                    for shard in row["shards"]
                ]
            ),
            hide_index=True,
            width="stretch",
        )
