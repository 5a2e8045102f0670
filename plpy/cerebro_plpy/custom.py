"""Registered models: a user's Python script whose entry point builds a compiled Keras model.

The entry point is called as ``create_model(params)`` with the config's params
plus ``input_shape`` (a tuple) and ``num_classes``; it returns a compiled
``keras.Model`` whose output is the class probabilities (softmax). The script
is compiled once per backend and cached in ``gd`` under its source's hash.

``register_model`` checks a script by building it for a sample dataset: features
of shape ``SAMPLE_INPUT_SHAPE`` (a module constant the script may set, default
``(28, 28, 1)``) and ``SAMPLE_NUM_CLASSES`` classes.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cerebro_plpy.params import TRAINING_PARAMS

if TYPE_CHECKING:
    import keras

GD_SCRIPTS = "cerebro.scripts"
DEFAULT_SAMPLE_INPUT_SHAPE = (28, 28, 1)
SAMPLE_NUM_CLASSES = 3


class ScriptError(ValueError):
    """A script that cannot build a model; the message says what is wrong and where."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    entry_point: str

    @property
    def sha256(self) -> str:
        return source_sha256(self.source)

    @property
    def filename(self) -> str:
        """What tracebacks and syntax errors name: line numbers refer to the registered source."""
        return f"<registered model {self.name}>"


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _script_line(error: BaseException, script: Script) -> str:
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == script.filename]
    return f" at line {lines[-1]}" if lines else ""


def _describe(error: Exception, script: Script) -> str:
    return f"{type(error).__name__}: {error}{_script_line(error, script)}"


def load(gd: dict[str, Any], script: Script) -> dict[str, Any]:
    """The script's module namespace, executed once per backend and source."""
    cache: dict[str, dict[str, Any]] = gd.setdefault(GD_SCRIPTS, {})
    if script.sha256 not in cache:
        try:
            code = compile(script.source, script.filename, "exec")
        except SyntaxError as error:
            raise ScriptError(f"model {script.name!r} has a syntax error at line {error.lineno}: {error.msg}") from None
        namespace: dict[str, Any] = {"__name__": f"cerebro_registered_{script.sha256[:12]}"}
        try:
            exec(code, namespace)  # noqa: S102 - running the registered script is the point (admin only)
        except Exception as error:
            raise ScriptError(f"model {script.name!r} raised {_describe(error, script)} when loaded") from None
        cache[script.sha256] = namespace
    return cache[script.sha256]


def entry_point(gd: dict[str, Any], script: Script) -> Callable[[dict[str, Any]], Any]:
    namespace = load(gd, script)
    function = namespace.get(script.entry_point)
    if not callable(function):
        defined = sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_"))
        raise ScriptError(
            f"model {script.name!r} has no function {script.entry_point!r}"
            f" (it defines {', '.join(defined) if defined else 'no functions'})"
        )
    return function


def create(
    gd: dict[str, Any], script: Script, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The compiled model the script builds for these params and this dataset."""
    import keras

    function = entry_point(gd, script)
    try:
        model = function({**params, "input_shape": tuple(input_shape), "num_classes": num_classes})
    except Exception as error:
        raise ScriptError(
            f"{script.entry_point}(params) of model {script.name!r} raised {_describe(error, script)}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ScriptError(
            f"{script.entry_point}(params) of model {script.name!r} returned {type(model).__name__}, not a keras.Model"
        )
    if not model.compiled or model.optimizer is None:
        raise ScriptError(
            f"{script.entry_point}(params) of model {script.name!r} returned an uncompiled model; "
            "call model.compile(optimizer=..., loss='sparse_categorical_crossentropy') before returning it"
        )
    return model


def sample_input_shape(gd: dict[str, Any], script: Script) -> tuple[int, ...]:
    shape = load(gd, script).get("SAMPLE_INPUT_SHAPE", DEFAULT_SAMPLE_INPUT_SHAPE)
    if not isinstance(shape, tuple | list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ScriptError(f"SAMPLE_INPUT_SHAPE of model {script.name!r} must be a tuple of positive ints, got {shape}")
    return tuple(shape)


def check(gd: dict[str, Any], script: Script) -> dict[str, Any]:
    """Build the script's model for a sample dataset and run it on two rows; raises :class:`ScriptError`.

    Returns what was checked (the sample shape and the model's parameter count).
    """
    shape = sample_input_shape(gd, script)
    params = {p.name: p.default for p in TRAINING_PARAMS}
    model = create(gd, script, params, shape, SAMPLE_NUM_CLASSES)
    try:
        output = np.asarray(model(np.zeros((2, *shape), dtype=np.float32), training=False))
    except Exception as error:
        raise ScriptError(
            f"the model of {script.name!r} fails on a batch of shape {(2, *shape)}: {_describe(error, script)}; "
            "set SAMPLE_INPUT_SHAPE in the script to the feature shape it is meant for"
        ) from None
    if output.shape != (2, SAMPLE_NUM_CLASSES):
        raise ScriptError(
            f"the model of {script.name!r} outputs shape {output.shape[1:]} for {SAMPLE_NUM_CLASSES} classes; "
            "it must end in Dense(params['num_classes'], activation='softmax')"
        )
    if not np.allclose(output.sum(axis=1), 1.0, atol=1e-3) or (output < 0).any():
        raise ScriptError(
            f"the model of {script.name!r} does not output class probabilities (rows must sum to 1); "
            "end it in a softmax"
        )
    return {"sample_input_shape": list(shape), "parameters": int(model.count_params())}
