"""Transfer learning on the dashboard: Launch offers imported models as bases with their layers' output shapes and
refuses a base of another input shape; Models & datasets lists imported models and materialized features with their
sizes, and drops them (the server's refusal shown)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import transfer_form
from streamlit.testing.v1 import AppTest

from tests.conftest import TINY_BASE_LAYERS, launch, one, run_until_idle, tiny_base, unique
from tests.ui.conftest import open_page

Session = psycopg.Connection[Any]

#: model_layers of tiny_base (28x28x1: a 3x3 valid conv of 4 filters, 2x2 pooling).
SHAPES = {
    "conv": "(None, 26, 26, 4)",
    "pool": "(None, 13, 13, 4)",
    "flatten": "(None, 676)",
    "dense": "(None, 8)",
    "classes": "(None, 5)",
}


def rows(*layers: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "class": kind, "output_shape": "(None, 1)"} for name, kind in layers]


def test_cuts_are_the_computing_layers_a_nested_models_own_row_left_out() -> None:
    exported = rows(("input", "InputLayer"), ("norm", "Normalization"), ("cnn", "Sequential"), ("cnn/conv", "Conv2D"))
    exported += rows(("cnn/flatten", "Flatten"), ("cnn/dense", "Dense"))
    assert [layer["name"] for layer in transfer_form.cut_layers(exported)] == [
        "norm",
        "cnn/conv",
        "cnn/flatten",
        "cnn/dense",
    ]
    assert transfer_form.layer_label({"name": "cnn/flatten", "class": "Flatten", "output_shape": "(None, 676)"}) == (
        "cnn/flatten · Flatten → (None, 676)"
    )


def test_what_keeps_a_transfer_space_from_launching() -> None:
    cuts = rows(*((name, "Dense") for name in TINY_BASE_LAYERS))
    assert transfer_form.layer_problem(cuts, ["flatten", "dense"], ["", "conv"]) is None
    assert transfer_form.layer_problem(cuts, [], ["dense"]) is None  # the default layer is dense
    assert "'classes' comes after layer 'flatten'" in str(transfer_form.layer_problem(cuts, ["flatten"], ["classes"]))
    assert "after layer 'dense'" in str(transfer_form.layer_problem(cuts, [], ["classes"]))
    assert "no layer before its classifier" in str(transfer_form.layer_problem(cuts[:1], [], []))
    base = {"name": "b", "input_shape": [28, 28, 1]}
    assert transfer_form.shape_problem(base, [28, 28, 1]) is None and transfer_form.shape_problem(base, None) is None
    assert transfer_form.shape_problem(base, [6]) == (
        "base 'b' takes inputs of shape 28×28×1, the dataset's features are 6: pick a base of the dataset's shape"
    )


@pytest.mark.parametrize(
    ("layers", "trainable_from", "space"),
    [
        ([], [], {"base": "b"}),
        (["dense"], [""], {"base": "b", "layer": "dense", "trainable_from": ""}),
        (
            ["flatten", "dense"],
            ["", "conv"],
            {"base": "b", "layer": ["flatten", "dense"], "trainable_from": ["", "conv"]},
        ),
    ],
)
def test_the_picked_space_and_back(layers: list[str], trainable_from: list[str], space: dict[str, Any]) -> None:
    assert transfer_form.space("b", layers, trainable_from) == space
    assert transfer_form.picked({**space, "lr": 0.1}) == ("b", layers, trainable_from)


@pytest.fixture
def base(conn: Session) -> Iterator[str]:
    name = unique("tiny_base")
    conn.execute("SELECT import_model(%s, %s, 'a tiny cnn')", [name, tiny_base(3)])
    yield name
    conn.execute("DELETE FROM imported_models WHERE name = %s", [name])


def launch_button(app: AppTest) -> Any:
    (button,) = [button for button in app.button if button.label == "Launch"]
    return button


def why_not(app: AppTest) -> str:
    return "\n".join(str(w.value) for w in app.warning if str(w.value).startswith("To launch:"))


def transfer_form_on(dataset: str, base: str) -> AppTest:
    app = open_page("launch")
    app.selectbox(key="dataset").set_value(dataset).run()
    app.selectbox(key="model").set_value("transfer").run()
    app.selectbox(key="transfer_base").set_value(base).run()
    assert not app.exception, app.exception
    return app


def test_launch_offers_the_base_and_its_layers_with_shapes(conn: Session, fashion_2seg: str, base: str) -> None:
    app = transfer_form_on(fashion_2seg, base)
    (label,) = [option for option in app.selectbox(key="transfer_base").options if option.startswith(f"{base} ·")]
    assert "input 28×28×1 · 6 layers" in label, label  # the input layer too
    assert app.multiselect(key=f"transfer_layer_{base}").options == [
        f"{name} · {kind} → {SHAPES[name]}"
        for name, kind in zip(TINY_BASE_LAYERS, ("Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"), strict=True)
    ]
    assert app.multiselect(key=f"transfer_trainable_{base}").options[0].startswith("nothing: the base stays frozen")
    edited = {box.key.removeprefix("mode_transfer_") for box in app.selectbox if box.key.startswith("mode_transfer_")}
    assert edited == {"lr", "batch_size", "optimizer", "head_units", "dropout"}  # the pickers set the others
    app.multiselect(key=f"transfer_layer_{base}").set_value(["flatten", "dense"]).run()
    app.multiselect(key=f"transfer_trainable_{base}").set_value(["", "conv"]).run()
    app.text_input(key="choices_transfer_lr").set_value("0.01").run()
    app.number_input(key="max_epochs").set_value(1).run()
    name = unique("fine_tune")
    app.text_input(key="name").set_value(name).run()
    assert "Grid creates **4 configs** × 1 epoch" in " ".join(str(i.value) for i in app.info)
    assert not launch_button(app).disabled, why_not(app)
    launch_button(app).click().run()
    assert not app.exception, app.exception
    workload, space = one(conn, "SELECT workload_id, search_space FROM workloads WHERE name = %s", name)
    assert space == {"base": base, "layer": ["flatten", "dense"], "trainable_from": ["", "conv"], "lr": 0.01}
    chosen = conn.execute(
        "SELECT params ->> 'layer', params ->> 'trainable_from' FROM configs WHERE workload_id = %s ORDER BY 1, 2",
        [workload],
    ).fetchall()
    assert chosen == [("dense", ""), ("dense", "conv"), ("flatten", ""), ("flatten", "conv")]
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_a_base_of_another_input_shape_cannot_launch(conn: Session, blobs_2seg: str, base: str) -> None:
    before = one(conn, "SELECT count(*) FROM workloads")
    app = transfer_form_on(blobs_2seg, base)
    reason = f"base '{base}' takes inputs of shape 28×28×1, the dataset's features are 6"
    assert launch_button(app).disabled
    assert reason in why_not(app), why_not(app)
    assert any(reason in str(w.value) for w in app.warning if not str(w.value).startswith("To launch:"))
    app.multiselect(key=f"transfer_trainable_{base}").set_value(["classes"]).run()  # still the shape's reason first
    assert reason in why_not(app)
    assert one(conn, "SELECT count(*) FROM workloads") == before


def test_a_trainable_from_after_the_layer_cannot_launch(fashion_2seg: str, base: str) -> None:
    app = transfer_form_on(fashion_2seg, base)
    app.multiselect(key=f"transfer_layer_{base}").set_value(["pool"]).run()
    app.multiselect(key=f"transfer_trainable_{base}").set_value(["dense"]).run()
    assert launch_button(app).disabled
    assert "trainable from 'dense' comes after layer 'pool'" in why_not(app), why_not(app)


def table(app: AppTest, column: str, value: str) -> list[dict[str, Any]]:
    """The rows of the page's dataframes whose ``column`` is ``value``."""
    found = []
    for frame in app.dataframe:
        data = frame.value
        if column in data.columns:
            found.extend(data[data[column] == value].to_dict("records"))
    return found


def choose(app: AppTest, key: str, starts: str) -> None:
    box = app.selectbox(key=key)
    box.select_index(next(i for i, option in enumerate(box.options) if option.startswith(starts))).run()


def errors(app: AppTest) -> str:
    return "\n".join(str(e.value) for e in app.error)


def test_the_catalog_lists_and_drops_bases_and_features(conn: Session, dsn: str, fashion_2seg: str, base: str) -> None:
    space = {"base": base, "layer": "flatten", "head_units": 4, "lr": [0.01]}
    trained = launch(conn, fashion_2seg, space, epochs=1, model="transfer")
    run_until_idle(dsn)
    app = open_page("catalog")
    (listed,) = table(app, "name", base)
    assert (listed["input"], listed["output"], listed["layers"], listed["size"][-3:]) == ("28×28×1", "5", 6, "KiB")
    (stored,) = table(app, "base", base)
    train, validation, size = one(
        conn, "SELECT train_rows, validation_rows, size_bytes FROM feature_catalog WHERE base = %s", base
    )
    assert (stored["dataset"], stored["layer"], stored["shape"]) == (fashion_2seg, "flatten", "676")
    assert stored["rows"] == f"{train:,} + {validation:,}" and train == 960
    assert size >= 4 * 676 * (train + validation) and stored["size"].endswith("MiB")  # 676 float32s a row
    assert f"Layers of **{base}**" in [expander.label for expander in app.expander]

    # a pending config fine-tunes it: the server refuses the drop, the page says why, nothing is dropped
    pending = launch(conn, fashion_2seg, space, epochs=1, model="transfer")
    choose(app, "drop_model_choice", f"{base} (")
    app.button(key="drop_model_confirm").click().run()
    assert f"imported model '{base}' is the base of 1 pending or running configs (your workloads {pending})" in errors(
        app
    ), errors(app)
    assert one(conn, "SELECT count(*) FROM imported_model_catalog WHERE name = %s", base) == 1
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [pending])

    choose(app, "drop_features_choice", f"{fashion_2seg} · {base} · flatten")
    app.button(key="drop_features_confirm").click().run()
    assert one(conn, "SELECT count(*) FROM feature_catalog WHERE base = %s", base) == 0
    assert table(app, "base", base) == []
    choose(app, "drop_model_choice", f"{base} (")
    app.button(key="drop_model_confirm").click().run()
    assert one(conn, "SELECT count(*) FROM imported_model_catalog WHERE name = %s", base) == 0
    assert table(app, "name", base) == []
    assert f"imported model '{base}' dropped" in [str(toast.value) for toast in app.toast]
    conn.execute("DELETE FROM workloads WHERE workload_id IN (%s, %s)", [trained, pending])
