"""cerebro_plpy.custom: registered scripts are checked with errors that say what is wrong, then train."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cerebro_plpy import custom, roster, training
from cerebro_plpy.custom import Script, ScriptError

GOOD = """
import keras

SAMPLE_INPUT_SHAPE = (6,)

def create_model(params):
    model = keras.Sequential([
        keras.Input(params["input_shape"]),
        keras.layers.Dense(params.get("units", 8), activation="relu"),
        keras.layers.Dense(params["num_classes"], activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(params["lr"]), loss="sparse_categorical_crossentropy")
    return model
"""

BROKEN = [
    ("def create_model(params):\n    return (\n", "syntax error at line 2"),
    ("import keras\n", "has no function 'create_model' (it defines no functions)"),
    ("def build(params):\n    pass\n", "has no function 'create_model' (it defines build)"),
    ("def create_model(params):\n    return 42\n", "returned int, not a keras.Model"),
    (
        "import keras\ndef create_model(params):\n"
        "    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation='softmax')])\n",
        "returned an uncompiled model",
    ),
    ("x = 1\ny = x / 0\n", "raised ZeroDivisionError: division by zero at line 2 when loaded"),
    ("def create_model(params):\n    return params['filters']\n", "raised KeyError: 'filters' at line 2"),
    (
        "import keras\ndef create_model(params):\n"
        "    m = keras.Sequential([keras.Input(params['input_shape']), keras.layers.Flatten(),\n"
        "                          keras.layers.Dense(5)])\n"
        "    m.compile(optimizer='sgd', loss='mse')\n    return m\n",
        "outputs shape (5,) for 3 classes",
    ),
    (
        "import keras\ndef create_model(params):\n"
        "    m = keras.Sequential([keras.Input(params['input_shape']), keras.layers.Flatten(),\n"
        "                          keras.layers.Dense(params['num_classes'])])\n"
        "    m.compile(optimizer='sgd', loss='mse')\n    return m\n",
        "does not output class probabilities",
    ),
]


@pytest.fixture(scope="module")
def gd() -> dict[str, Any]:
    cache: dict[str, Any] = {}
    training.tensorflow(cache)
    return cache


@pytest.mark.parametrize(("source", "error"), BROKEN, ids=[e for _, e in BROKEN])
def test_broken_scripts_are_refused_with_what_is_wrong(gd: dict[str, Any], source: str, error: str) -> None:
    with pytest.raises(ScriptError, match=error.replace("(", r"\(").replace(")", r"\)")):
        custom.check(gd, Script("broken", source, "create_model"))


def test_good_script_checks_and_is_cached_by_source_hash(gd: dict[str, Any]) -> None:
    script = Script("good", GOOD, "create_model")
    assert custom.check(gd, script)["sample_input_shape"] == [6]
    assert custom.load(gd, script) is gd[custom.GD_SCRIPTS][custom.source_sha256(GOOD)]


def test_entry_point_name_is_configurable(gd: dict[str, Any]) -> None:
    with pytest.raises(ScriptError, match="has no function 'build' \\(it defines create_model\\)"):
        custom.check(gd, Script("good", GOOD, "build"))


def test_registered_model_trains_deterministically_with_open_params(gd: dict[str, Any]) -> None:
    params = roster.validate("good", {"units": 4, "lr": 0.05}, (6,), registered=True)
    assert params == {"lr": 0.05, "batch_size": 64, "optimizer": "adam", "units": 4}
    spec = training.ModelSpec("good", params, (6,), 3, seed=3, script=Script("good", GOOD, "create_model"))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40).astype(np.float32)
    states = []
    for _ in range(2):
        model = training.build_compiled(gd, spec)
        assert model.layers[0].units == 4
        training.train_pass(gd, model, x, y, 8, lambda: None)
        states.append(training.capture(model).encode())
    assert states[0] == states[1]


def test_open_params_refuse_structured_values() -> None:
    with pytest.raises(Exception, match="units must be a number, string or boolean"):
        roster.validate("good", {"units": [1, 2]}, (6,), registered=True)


def test_unregistered_names_stay_unknown() -> None:
    with pytest.raises(Exception, match="unknown model 'good'"):
        roster.validate("good", {}, (6,))
