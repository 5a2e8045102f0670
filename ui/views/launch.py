"""Launch a workload: dataset (or prepare one), roster model (transfer: a base and its layers), search space,
procedure; grid preview."""

import json
from typing import Any, NamedTuple

import common
import pandas as pd
import search_space_editor as editor
import streamlit as st
import transfer_form
from sqlalchemy import Connection

from cerebro_db import client
from cerebro_db.models import PROCEDURES

MODES = ("default", "choices", "range")
PREPARED, FROM_TABLE = "Prepared dataset", "Prepare one from a table"


class DatasetChoice(NamedTuple):
    name: str | None  # the prepared dataset to launch on
    missing: str | None = None  # why there is none
    preparable: bool = False  # the table form is complete: "Prepare dataset" can be offered beside Launch too
    feature_shape: list[int] | None = None  # the prepared dataset's


@st.cache_data(ttl=600, show_spinner=False)
def roster() -> dict[str, tuple[str, list[editor.ParamSpec]]]:
    return editor.param_specs(common.read(client.roster))


def apply_prefill(prefill: dict[str, Any]) -> None:
    """Widget state for a drill-down (set by the workload page): the refined space around chosen configs."""
    st.session_state.update(
        dataset_source=PREPARED,
        dataset=prefill["dataset"],
        model=prefill["model"],
        procedure=prefill["procedure"],
        num_configs=prefill["num_configs"],
        max_epochs=prefill["max_epochs"],
        name=prefill["name"],
        parent_workload=prefill["parent_workload"],
        warm_start=True,
    )
    model, space = prefill["model"], dict(prefill["search_space"])
    if model not in roster():  # a registered script: its space is typed as JSON
        st.session_state[f"space_json_{model}"] = json.dumps(space)
        return
    if model == transfer_form.MODEL:  # the base and layers have pickers of their own
        base, layers, trainable_from = transfer_form.picked(space)
        if base is not None:
            st.session_state.update(
                {"transfer_base": base, f"transfer_layer_{base}": layers, f"transfer_trainable_{base}": trainable_from}
            )
        space = {key: value for key, value in space.items() if key not in transfer_form.PICKED}
    for spec in roster()[model][1]:
        st.session_state[f"mode_{model}_{spec.name}"] = "default"
    for entry in editor.space_entries(space):
        key = f"{model}_{entry.name}"
        st.session_state.update(
            {
                f"mode_{key}": entry.mode,
                f"choices_{key}": entry.choices,
                f"low_{key}": entry.low,
                f"high_{key}": entry.high,
                f"log_{key}": entry.log,
            }
        )


def prepare() -> None:
    """Callback of "Prepare dataset" (disabled until the form is complete): prepare_dataset, then select the new
    dataset."""
    state = st.session_state
    table = state["prep_table"]
    name = state["prep_name"].strip()

    def run(conn: Connection) -> str:
        shards = client.prepare_dataset(
            conn,
            name,
            table,
            state[f"prep_label_{table}"],
            feature_columns=state[f"prep_features_{table}"],
            feature_shape=editor.feature_shape(state.get("prep_shape", "")),
            validation_fraction=state["prep_fraction"],
        )
        train = sum(row["train_rows"] for row in shards)
        validation = sum(row["validation_rows"] for row in shards)
        return (
            f"dataset {name!r} prepared: {train:,} training and {validation:,} validation rows"
            f" on {len(shards)} segments"
        )

    if common.act(run, once=f"prepare {name}"):
        state.update(dataset_source=PREPARED, dataset=name)


def prepare_button(problem: str | None, key: str) -> None:
    """ "Prepare dataset", or why it cannot run yet beside it."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button(
            "Prepare dataset", key=key, on_click=prepare, icon=":material/database:", disabled=problem is not None
        )
        if problem is not None:
            st.caption(f"To prepare: {problem}.")


def dataset_section() -> DatasetChoice:
    """The dataset to launch on, or None and why there is none; the form that prepares one from a table."""
    st.subheader("1 · Dataset")
    datasets = common.read(client.datasets)
    source = st.radio("Dataset", (PREPARED, FROM_TABLE), key="dataset_source", horizontal=True)
    if source == PREPARED:
        if not datasets:
            st.info("No prepared datasets yet — prepare one from a table.")
            return DatasetChoice(None, "no prepared dataset yet: choose “Prepare one from a table” in 1 · Dataset")
        by_name = {row["name"]: row for row in datasets}
        name: str = st.selectbox("Prepared dataset", list(by_name), key="dataset")
        row = by_name[name]
        st.caption(
            f"{row['train_rows']:,} training / {row['validation_rows']:,} validation rows · "
            f"{row['num_classes']} classes · features {'×'.join(map(str, row['feature_shape']))} · "
            f"{row['num_segments']} segments · from `{row['source_table']}`"
        )
        return DatasetChoice(name, feature_shape=list(row["feature_shape"]))
    tables = common.read(client.source_tables)
    if not tables:
        st.info("No tables to prepare from: load one into the database first (`cerebro-db demo` loads Fashion-MNIST).")
        return DatasetChoice(None, "no table to prepare a dataset from")
    table_col, label_col = st.columns(2)
    table: str = table_col.selectbox("Source table", list(tables), key="prep_table")
    columns = tables[table]
    # Keyed by table: another table gets its own defaults. No label column is guessed but one named like a label.
    label = editor.default_label(columns)
    chosen_label: str | None = label_col.selectbox(
        "Label column",
        columns,
        index=None if label is None else columns.index(label),
        key=f"prep_label_{table}",
        placeholder="choose the column to predict",
    )
    features = st.multiselect(
        "Feature columns",
        columns,
        default=editor.default_features(columns, label),
        key=f"prep_features_{table}",
        placeholder="choose the columns to learn from",
        help="Numeric columns, or one array / bytea column (then give its shape). Ids are left out: a model "
        "would learn the row order.",
    )
    name_col, shape_col, fraction_col = st.columns(3)
    name = name_col.text_input("Dataset name", key="prep_name", placeholder="e.g. fashion")
    shape = shape_col.text_input("Feature shape", key="prep_shape", placeholder="e.g. 28,28,1 for images")
    fraction_col.slider("Validation fraction", 0.05, 0.5, 0.1, 0.05, key="prep_fraction")
    problem = editor.dataset_problem(chosen_label, features, name, shape)
    prepare_button(problem, "prepare")
    if problem is None:
        return DatasetChoice(None, "prepare the dataset first", preparable=True)
    return DatasetChoice(None, f"prepare the dataset first: {problem} in 1 · Dataset")


def base_label(row: dict[str, Any]) -> str:
    return (
        f"{row['name']} · input {transfer_form.shape_text(row['input_shape'])} · "
        f"{common.plural(row['layers'], 'layer')} · {common.size(row['size_bytes'])}"
    )


def transfer_section(feature_shape: list[int] | None) -> tuple[dict[str, Any] | None, str | None]:
    """transfer's base (an imported model) and the layers to cut at and train from, each shown with its output
    shape: the search space's picked keys (None without a base), and why Launch must wait (None if it need not)."""
    bases = {row["name"]: row for row in common.read(client.imported_models)}
    if not bases:
        st.info(
            "No imported models to fine-tune yet: `cerebro-db import-model NAME FILE.keras` imports one "
            "(or `SELECT import_model(...)`; README: Transfer learning)."
        )
        return None, "import a base model to fine-tune first (cerebro-db import-model)"
    if st.session_state.get("transfer_base") not in bases:  # first visit, or the base was dropped
        fitting = [name for name, row in bases.items() if transfer_form.shape_problem(row, feature_shape) is None]
        st.session_state["transfer_base"] = (fitting or list(bases))[0]
    base: str = st.selectbox(
        "Base model",
        list(bases),
        key="transfer_base",
        format_func=lambda name: base_label(bases[name]),
        help="an imported model (Models & datasets lists them): its input shape must be the dataset's features'",
    )
    row = bases[base]
    st.caption(
        f"{row['description'] or 'no description'} · output {transfer_form.shape_text(row['output_shape'])} · "
        f"{row['params']:,} weights · imported {row['created_at']:%Y-%m-%d %H:%M} by {row['owner']}"
    )
    mismatch = transfer_form.shape_problem(row, feature_shape)
    if mismatch is not None:
        st.warning(mismatch, icon=":material/block:")
    layers = common.read(client.model_layers, base)
    cuts = transfer_form.cut_layers(layers)
    names = [layer["name"] for layer in cuts]
    labels = {layer["name"]: transfer_form.layer_label(layer) for layer in cuts}
    frozen = "nothing: the base stays frozen (feature transfer)"
    layer_col, trainable_col = st.columns(2)
    chosen = layer_col.multiselect(
        "Layer (the head reads its output)",
        names,
        key=f"transfer_layer_{base}",
        format_func=labels.__getitem__,
        placeholder=f"default: {names[-2]}" if len(names) > 1 else "choose a layer",
        help="several: the search space compares them (configs that freeze the base share one materialization)",
    )
    trainable_from = trainable_col.multiselect(
        "Trainable from",
        [transfer_form.FROZEN, *names],
        key=f"transfer_trainable_{base}",
        format_func=lambda name: frozen if name == transfer_form.FROZEN else labels[name],
        placeholder=f"default: {frozen}",
        help="this layer and the later ones up to the cut are trained, earlier ones stay frozen",
    )
    with st.expander(f"Layers of {base} ({len(layers)})"):
        st.dataframe(
            pd.DataFrame(layers).set_index("index")[["name", "class", "output_shape", "params", "trainable"]],
            width="stretch",
        )
    problem = mismatch or transfer_form.layer_problem(cuts, chosen, trainable_from)
    return transfer_form.space(base, chosen, trainable_from), problem


def space_section(model: str, params: list[editor.ParamSpec]) -> list[editor.SpaceEntry]:
    """One row per hyper-parameter: left at the model's default, a list of choices, or a range."""
    entries = []
    st.session_state.setdefault(f"mode_{model}_lr", "choices")
    st.session_state.setdefault(f"choices_{model}_lr", "0.001, 0.003")
    for spec in params:
        key = f"{model}_{spec.name}"
        name_col, mode_col, value_col = st.columns([2, 2, 5], vertical_alignment="bottom")
        name_col.markdown(f"**{spec.name}**", help=f"{spec.doc}; {spec.type}, allowed {spec.allowed}")
        mode = mode_col.selectbox(
            "mode", MODES if spec.type != "str" else MODES[:2], key=f"mode_{key}", label_visibility="collapsed"
        )
        if mode == "default":
            value_col.caption(f"default: `{json.dumps(spec.default)}`")
        elif mode == "choices":
            value_col.text_input(
                "choices", key=f"choices_{key}", placeholder="comma-separated values", label_visibility="collapsed"
            )
        else:
            low, high, log = value_col.columns([2, 2, 1], vertical_alignment="center")
            low.text_input("min", key=f"low_{key}", placeholder="min", label_visibility="collapsed")
            high.text_input("max", key=f"high_{key}", placeholder="max", label_visibility="collapsed")
            log.checkbox("log", key=f"log_{key}", help="sample on a log scale")
        state = st.session_state
        entries.append(
            editor.SpaceEntry(
                spec.name,
                mode,
                choices=state.get(f"choices_{key}", ""),
                low=state.get(f"low_{key}", ""),
                high=state.get(f"high_{key}", ""),
                log=state.get(f"log_{key}", False),
            )
        )
    return entries


def preview(space: dict[str, Any], procedure: str, max_epochs: int, num_configs: int | None) -> None:
    size = editor.grid_size(space)
    if procedure == "grid" or (procedure == "hyperband" and num_configs is None):
        if size is not None:  # else Launch says why it is disabled
            st.info(
                f"Grid creates **{size} config{'s' if size != 1 else ''}** × {common.plural(max_epochs, 'epoch')} = "
                f"{size * max_epochs:,} config-epochs"
                + (" (hyperband then stops the weakest at epochs 1, 3, 9, …)." if procedure == "hyperband" else ".")
            )
    elif procedure == "hyperopt":
        st.info(f"Hyperopt starts one config per segment; TPE proposes more up to **{num_configs or '?'}**.")
    else:
        st.info(
            f"{procedure.capitalize()} samples **{num_configs or '?'} configs** × {common.plural(max_epochs, 'epoch')}."
        )
    with st.expander("Search space (jsonb)"):
        st.code(json.dumps(space, indent=2), language="json")


st.title("Launch a workload")
common.show_flashes()
if "launch_prefill" in st.session_state:
    apply_prefill(st.session_state.pop("launch_prefill"))

data_col, model_col = st.columns(2, gap="large")
with data_col:
    dataset = dataset_section()
with model_col:
    st.subheader("2 · Model")
    models = roster()
    scripts = [row["name"] for row in common.read(client.registered_models)]
    model: str = st.selectbox(
        "Model", [*models, *scripts], key="model", help="the roster, then registered scripts (Models & datasets)"
    )
    st.caption(
        models[model][0] if model in models else "registered script: its own hyper-parameters, plus lr and batch_size"
    )
st.subheader("3 · Search space")
picked: dict[str, Any] | None = None
transfer_problem = None
if model == transfer_form.MODEL:
    picked, transfer_problem = transfer_section(dataset.feature_shape)
if model in models:
    entries = space_section(
        model,
        [spec for spec in models[model][1] if model != transfer_form.MODEL or spec.name not in transfer_form.PICKED],
    )
else:
    space_json = st.text_area(
        "Search space (JSON)",
        value='{"lr": [0.001, 0.01]}',
        key=f"space_json_{model}",
        help='choices {"units": [32, 64]}, ranges {"lr": {"min": 1e-4, "max": 1e-2, "log": true}}',
    )

st.subheader("4 · Procedure")
proc_col, epochs_col, configs_col = st.columns(3)
procedure: str = proc_col.selectbox("Procedure", PROCEDURES, key="procedure")
st.session_state.setdefault("max_epochs", 5)  # not value=: a drill-down may have set it
max_epochs = int(epochs_col.number_input("Max epochs", min_value=1, max_value=1000, key="max_epochs"))
num_configs = None
st.session_state.setdefault("num_configs", None)
if procedure != "grid":
    chosen = configs_col.number_input(
        "Number of configs",
        min_value=1,
        max_value=10000,
        key="num_configs",
        placeholder="grid of the choices" if procedure == "hyperband" else "required",
    )
    num_configs = None if chosen is None else int(chosen)
name_col, description_col = st.columns([1, 2])
name = name_col.text_input("Name", key="name", placeholder="e.g. cnn lr sweep")
description = description_col.text_input("Description", key="description", placeholder="what you want to learn")
with st.expander("Drill down from a parent workload", expanded=st.session_state.get("parent_workload") is not None):
    parents = {row["workload_id"]: row for row in common.read(client.workloads)}
    parent_col, warm_col = st.columns(2)
    parent = parent_col.selectbox(
        "Parent workload",
        list(parents),
        index=None,
        key="parent_workload",
        format_func=lambda w: f"#{w} {parents[w]['name'] or ''}",
        placeholder="none",
    )
    warm_start = warm_col.checkbox(
        "Warm start", key="warm_start", help="start from the parent's best config's weights (same architecture)"
    )

space: dict[str, Any] | None
try:
    if model in models:
        space = editor.build_search_space(entries, models[model][1], picked)
    else:
        space = editor.parse_space_json(space_json)
except editor.SpaceError as error:
    space = None
    st.error(f"Search space: {error}")
if space is not None:
    preview(space, procedure, max_epochs, num_configs)

problems = [
    dataset.missing,
    transfer_problem,
    None if space is not None else "fix the search space (the error above)",
    None if space is None else editor.procedure_problem(space, procedure, num_configs),
]
reasons = [problem for problem in problems if problem is not None]
launch_row = st.container(horizontal=True, vertical_alignment="center")
if launch_row.button("Launch", type="primary", icon=":material/rocket_launch:", disabled=bool(reasons)):
    assert dataset.name is not None and space is not None
    request = client.LaunchRequest(
        dataset.name, model, space, procedure, max_epochs, num_configs, name, description, parent, warm_start
    )
    launched: list[int] = []

    def run(conn: Connection) -> str:
        launched.append(client.launch(conn, request))
        return f"workload {launched[0]} launched"

    if common.act(run, once=repr(request)):
        st.switch_page(common.DETAIL_PAGE, query_params={"workload": str(launched[0])})
    common.show_flashes()
if reasons:
    launch_row.warning(f"To launch: {'; '.join(reasons)}.", icon=":material/block:")
if dataset.preparable:  # the action the first reason asks for, right here
    with launch_row:
        prepare_button(None, "prepare_at_launch")
