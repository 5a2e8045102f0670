"""Training processes outside the database (bench/approaches.py's baselines): a :class:`Pool` of spawned workers,
one TensorFlow thread each (as a segment backend), each holding the training rows or one segment's shard."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from cerebro_plpy.state import ModelState

WORKERS = 2
#: Rows each worker trains and validates on per config while warming up (as MOP's warm-up dataset).
WARMUP_ROWS = 600


def _worker(index: int, data_path: str, part: str, conn: Connection) -> None:
    """One training process: holds its data, takes commands from ``conn`` until ``None``.

    ``part`` is ``'all'`` (a full copy of the training rows) or ``'shard'`` (training rows of segment
    ``index``, and the ``index``-th half of the validation rows).
    """
    from cerebro_plpy import memory, training

    gd: dict[str, Any] = {}
    training.tensorflow(gd)  # one intra- and one inter-op thread, as a segment backend
    data = np.load(data_path)
    x, y, val_x, val_y = data["x"], data["y"], data["val_x"], data["val_y"]
    if part == "shard":
        mine = data["segment"] == index
        x, y = x[mine], y[mine]
        val_x = np.array_split(val_x, WORKERS)[index]
        val_y = np.array_split(val_y, WORKERS)[index]
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)

    def fresh(spec: training.ModelSpec) -> Any:
        model = training.cached_model(gd, spec)
        training.restore(model, training.initial_state(gd, spec))
        training.set_learning_rate(model, spec.params["lr"])
        return model

    def evaluate(model: Any) -> tuple[float, float]:
        return training.evaluate(gd, model, val_x, val_y, memory.EVALUATION_BATCH, lambda: None)

    def noop() -> None:
        return None

    while True:
        command = conn.recv()
        if command is None:
            break
        kind = command[0]
        if kind == "warmup":  # every config's architecture built and traced, as in MOP's warm-up workload
            for spec in command[1]:
                model = fresh(spec)
                training.train_pass(gd, model, x[:WARMUP_ROWS], y[:WARMUP_ROWS], spec.params["batch_size"], noop)
                training.evaluate(gd, model, val_x[:WARMUP_ROWS], val_y[:WARMUP_ROWS], memory.EVALUATION_BATCH, noop)
            conn.send(("ready", index, int(x.nbytes + y.nbytes)))
        elif kind == "pass":  # model averaging: one pass over the local shard from the given state
            _, spec, raw = command
            model = training.cached_model(gd, spec)
            state = ModelState.decode(raw) if raw is not None else training.initial_state(gd, spec)
            training.restore(model, state)
            training.set_learning_rate(model, spec.params["lr"])
            loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], noop)
            conn.send(("pass", index, training.capture(model).encode(), loss, metric, len(y)))
        elif kind == "evaluate":  # model averaging: the averaged state on the local validation half
            _, spec, raw = command
            model = training.cached_model(gd, spec)
            training.restore(model, ModelState.decode(raw))
            conn.send(("evaluate", index, *evaluate(model), len(val_y)))
        elif kind == "config":  # task parallelism and sequential: one whole config
            _, number, spec, epochs = command
            model = fresh(spec)
            history = []
            for _ in range(epochs):
                loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], noop)
                history.append((loss, metric, *evaluate(model)))
            conn.send(("config", index, number, history))
        else:
            raise ValueError(f"unknown command {kind!r}")


class Pool:
    """``count`` worker processes ('spawn', one TensorFlow thread each), each with its own pipe."""

    def __init__(self, count: int, data_path: Path, part: str) -> None:
        context = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker, args=(index, str(data_path), part, theirs), daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    def warm_up(self, specs: list[Any]) -> int:
        """Warm every worker; returns the bytes of training data the workers hold together."""
        for pipe in self.pipes:
            pipe.send(("warmup", specs))
        return sum(int(self.receive(pipe, "ready")[2]) for pipe in self.pipes)

    def receive(self, pipe: Connection, kind: str) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = pipe.recv()
        except EOFError:
            codes = [p.exitcode for p in self.processes]
            raise RuntimeError(f"a worker process died (exit codes {codes})") from None
        if message[0] != kind:
            raise RuntimeError(f"expected a {kind!r} reply, got {message[0]!r}")
        return message

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
