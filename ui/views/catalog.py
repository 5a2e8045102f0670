"""The model roster, registered model scripts (admins register new ones), imported models and the features
materialized from them, and the prepared datasets."""

from collections.abc import Callable
from typing import Any

import common
import pandas as pd
import search_space_editor
import streamlit as st
import transfer_form
from sqlalchemy import Connection

from cerebro_db import client

EXAMPLE_SCRIPT = """import keras

def create_model(params):
    # params: the config's hyper-parameters, plus input_shape and num_classes of the dataset
    model = keras.Sequential([
        keras.Input(params["input_shape"]),
        keras.layers.Flatten(),
        keras.layers.Dense(params.get("units", 64), activation="relu"),
        keras.layers.Dense(params["num_classes"], activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(params["lr"]), loss="sparse_categorical_crossentropy")
    return model
"""


def register() -> None:
    """Callback of "Register": the server checks the script (it must build a compiled model) before storing it."""
    state = st.session_state
    upload = state.get("script_file")
    source = upload.getvalue().decode() if upload is not None else state["script_source"]
    name, entry_point = state["script_name"].strip(), state["script_entry"].strip()
    if not name:
        common.flash("error", "give the model a name")
        return

    def run(conn: Connection) -> str:
        return client.register_model(conn, name, source, entry_point)

    common.act(run, once=f"register {name}")


def drop_popover(
    what: str, key: str, options: list[Any], label: Callable[[Any], str], drop: Callable[[Any], None]
) -> None:
    """A "Drop" popover: choose one of ``options``, then confirm; the database refuses what is still in use."""
    with st.popover(f"Drop {what}", icon=":material/delete:"):
        chosen = st.selectbox(what.capitalize(), options, key=f"{key}_choice", format_func=label)
        st.caption("This cannot be undone.")
        st.button("Drop it", key=f"{key}_confirm", type="primary", on_click=drop, args=(chosen,))


def drop_model(name: str) -> None:
    common.act(lambda conn: client.drop_imported_model(conn, name))


def drop_features(row: dict[str, Any]) -> None:
    common.act(lambda conn: client.drop_features(conn, row["dataset"], row["base"], row["layer"]))


def imported_models_section() -> None:
    st.subheader("Imported models")
    models = common.read(client.imported_models)
    if not models:
        st.info(
            "No imported models yet: `cerebro-db import-model NAME FILE.keras` imports a pretrained Keras model "
            "(or `SELECT import_model(...)`), to fine-tune with the roster model `transfer`."
        )
        return
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "name": row["name"],
                    "input": transfer_form.shape_text(row["input_shape"]),
                    "output": transfer_form.shape_text(row["output_shape"]),
                    "layers": row["layers"],
                    "weights": row["params"],
                    "size": common.size(row["size_bytes"]),
                    "created": row["created_at"],
                    "owner": row["owner"],
                    "description": row["description"],
                }
                for row in models
            ]
        ),
        column_config={"created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
        hide_index=True,
        width="stretch",
    )
    for row in models:
        with st.expander(f"Layers of **{row['name']}**"):
            layers = common.read(client.model_layers, row["name"])
            st.dataframe(
                pd.DataFrame(layers).set_index("index")[["name", "class", "output_shape", "params", "trainable"]],
                width="stretch",
            )
    by_name = {row["name"]: row for row in models}
    drop_popover(
        "an imported model",
        "drop_model",
        list(by_name),
        lambda name: f"{name} ({common.size(by_name[name]['size_bytes'])})",
        drop_model,
    )


def features_section() -> None:
    st.subheader("Materialized features")
    found = common.read(client.features)
    if not found:
        st.info(
            "No materialized features yet: a transfer config that freezes its base stores the base's outputs at its "
            "layer once per dataset, here, for every later config to reuse."
        )
        return
    st.caption(
        f"{common.plural(len(found), 'feature set')}, {common.size(sum(r['size_bytes'] for r in found))} in all."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "dataset": row["dataset"],
                    "base": row["base"],
                    "layer": row["layer"],
                    "shape": transfer_form.shape_text(row["feature_shape"]),
                    "rows": f"{row['train_rows']:,} + {row['validation_rows']:,}",
                    "size": common.size(row["size_bytes"]),
                    "created": row["created_at"],
                }
                for row in found
            ]
        ),
        column_config={
            "rows": st.column_config.TextColumn(help="training + validation rows"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
        hide_index=True,
        width="stretch",
    )
    drop_popover(
        "features",
        "drop_features",
        found,
        lambda row: f"{row['dataset']} · {row['base']} · {row['layer']} ({common.size(row['size_bytes'])})",
        drop_features,
    )


st.title("Models & datasets")
common.show_flashes()

st.subheader("Roster")
for model, (doc, params) in search_space_editor.param_specs(common.read(client.roster)).items():
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

st.subheader("Registered scripts")
scripts = common.read(client.registered_models)
if not scripts:
    st.info("No registered model scripts yet.")
for row in scripts:
    with st.expander(f"**{row['name']}** — `{row['entry_point']}(params)` · by {row['owner']}"):
        st.code(row["source"], language="python")
if common.read(client.may_register_models):
    with st.expander("Register a model script", expanded=not scripts):
        st.caption(
            "A Python file whose entry point returns a compiled `keras.Model` for a config's params "
            "(plus the dataset's `input_shape` and `num_classes`). It runs inside the database server, "
            "so only admins (cerebro_admin) may register one; it is built once here to check it."
        )
        name_col, entry_col = st.columns(2)
        name_col.text_input("Model name", key="script_name", placeholder="e.g. wide_and_deep")
        entry_col.text_input("Entry point", value="create_model", key="script_entry")
        st.file_uploader("Script (.py)", type=["py"], key="script_file")
        st.text_area("… or paste it", value=EXAMPLE_SCRIPT, height=260, key="script_source")
        st.button("Register", on_click=register, icon=":material/upload:")

imported_models_section()
features_section()

st.subheader("Prepared datasets")
found = common.read(client.datasets)
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
