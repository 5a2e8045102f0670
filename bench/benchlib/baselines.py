"""The baselines of bench/approaches.py: worker processes training outside the database on a workload's rows.

:func:`export` writes a prepared dataset's rows (with their segment) to an ``.npz`` file; a :class:`Pool` of
spawned workers (one TensorFlow thread each, as a segment backend) holds all of it or one shard each, and
:func:`run_baseline` times model averaging (:func:`average_configs`) or whole configs (:func:`whole_configs`).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from benchlib.workers import Pool
from cerebro_plpy import packing
from cerebro_plpy.state import ModelState


class Runnable:
    """The machine's mean number of runnable tasks (``procs_running`` of /proc/stat) while open.

    An approach keeps its 2 workers (sequential: 1) busy; anything above that is other work competing for
    the 2 cores. Without /proc/stat the mean stays NaN.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[int] = []
        #: When each sample was taken (``time.time()``, the clock of the local servers' ``clock_timestamp()``).
        self.times: list[float] = []
        #: At each sample, the machine's CPU time so far and the part of it the hypervisor gave to others (steal).
        self.cpu: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                text = Path("/proc/stat").read_text()
            except OSError:
                return
            lines = text.splitlines()
            for line in lines:
                if line.startswith("procs_running "):
                    self.samples.append(int(line.split()[1]) - 1)  # not this sampling thread
                    self.times.append(time.time())
                    # "cpu user nice system idle iowait irq softirq steal ...", in clock ticks
                    ticks = [int(v) for v in lines[0].split()[1:9]]
                    self.cpu.append((sum(ticks), ticks[7]))

    def __enter__(self) -> Runnable:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")

    def mean_between(self, start: float, end: float) -> float:
        """The mean of the samples taken from ``start`` to ``end`` (``time.time()``)."""
        inside = [n for n, t in zip(self.samples, self.times, strict=True) if start <= t <= end]
        return statistics.fmean(inside) if inside else float("nan")

    def steal_between(self, start: float, end: float) -> float:
        """The share of the machine's CPU time from ``start`` to ``end`` that the hypervisor gave to other
        machines (steal: a slower machine that no runnable count shows)."""
        inside = [c for c, t in zip(self.cpu, self.times, strict=True) if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


@dataclass
class Run:
    key: str
    wall_s: float
    samples: int
    data_bytes: int
    copies: int
    #: Per config label: [(epoch, val_loss, val_acc)].
    history: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    warmup_s: float = 0.0
    #: Mean runnable tasks on the machine while the approach trained (see Runnable).
    runnable: float = float("nan")

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s

    @property
    def final_acc(self) -> float:
        return statistics.fmean(h[-1][2] for h in self.history.values())


def label(params: dict[str, Any]) -> str:
    return f"lr={params['lr']:g} bs={params['batch_size']}"


def average(states: list[ModelState], weights: list[int]) -> ModelState:
    """Rows-weighted mean of float arrays; other arrays (iteration counters, seeds) from the first state."""
    share = np.asarray(weights, dtype=np.float64) / sum(weights)

    def mean(arrays: list[np.ndarray]) -> np.ndarray:
        if not np.issubdtype(arrays[0].dtype, np.floating):
            return arrays[0]
        return sum(w * a.astype(np.float64) for w, a in zip(share, arrays, strict=True)).astype(arrays[0].dtype)

    return ModelState(
        [mean(list(a)) for a in zip(*(s.model_variables for s in states), strict=True)],
        [mean(list(a)) for a in zip(*(s.optimizer_variables for s in states), strict=True)],
    )


def run_baseline(
    key: str,
    workers: int,
    part: str,
    train: Callable[[Pool, list[Any], int, Run], None],
    data: Path,
    specs: list[Any],
    epochs: int,
    samples: int,
) -> Run:
    """Warm a pool of ``workers`` holding ``part`` of the data, then time ``train`` on it."""
    pool = Pool(workers, data, part)
    try:
        started = time.perf_counter()
        held = pool.warm_up(specs)
        warmup_s = time.perf_counter() - started
        run = Run(key, 0.0, samples, held, workers if part == "all" else 1, warmup_s=warmup_s)
        with Runnable() as load:
            started = time.perf_counter()
            train(pool, specs, epochs, run)
            run.wall_s = time.perf_counter() - started
        run.runnable = load.mean
        return run
    finally:
        pool.close()


def average_configs(pool: Pool, specs: list[Any], epochs: int, run: Run) -> None:
    """Each config in turn: per epoch, a pass on each worker's shard from the same state, then the average."""
    for spec in specs:
        raw: bytes | None = None
        history = []
        for epoch in range(1, epochs + 1):
            for pipe in pool.pipes:
                pipe.send(("pass", spec, raw))
            replies = [pool.receive(pipe, "pass") for pipe in pool.pipes]
            merged = average([ModelState.decode(r[2]) for r in replies], [r[5] for r in replies])
            raw = merged.encode()
            for pipe in pool.pipes:
                pipe.send(("evaluate", spec, raw))
            scores = [pool.receive(pipe, "evaluate") for pipe in pool.pipes]
            rows = sum(s[4] for s in scores)
            history.append((epoch, sum(s[2] * s[4] for s in scores) / rows, sum(s[3] * s[4] for s in scores) / rows))
        run.history[label(spec.params)] = history


def whole_configs(pool: Pool, specs: list[Any], epochs: int, run: Run) -> None:
    """Hand the next config to the next free worker until all are trained."""
    queue = list(enumerate(specs))
    busy: dict[Connection, int] = {}
    for pipe in pool.pipes:
        if queue:
            number, spec = queue.pop(0)
            pipe.send(("config", number, spec, epochs))
            busy[pipe] = number
    while busy:
        for ready in wait(list(busy)):
            assert isinstance(ready, Connection)
            _, _, number, history = pool.receive(ready, "config")
            del busy[ready]
            run.history[label(specs[number].params)] = [
                (epoch, val_loss, val_acc) for epoch, (_, _, val_loss, val_acc) in enumerate(history, start=1)
            ]
            if queue:
                number, spec = queue.pop(0)
                ready.send(("config", number, spec, epochs))
                busy[ready] = number


def export(dsn: str, dataset: str, workload_id: int, model: str, path: Path) -> tuple[list[Any], int, int]:
    """The prepared dataset's rows (training rows in buffer order, with their segment) into ``path``;
    returns (the workload's configs as ModelSpecs, bytes of training data in the database, validation rows)."""
    from cerebro_plpy.training import ModelSpec

    with psycopg.connect(dsn, autocommit=True) as conn:
        meta = conn.execute(
            "SELECT dataset_id, feature_shape, num_classes FROM datasets WHERE name = %s", [dataset]
        ).fetchone()
        assert meta is not None
        dataset_id, shape, classes = int(meta[0]), tuple(meta[1]), int(meta[2])
        parts: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "validation": []}
        stored = 0
        for segment, split, raw_x, raw_y in conn.execute(
            "SELECT segment, split, x, y FROM dataset_buffers WHERE dataset_id = %s ORDER BY buffer_id", [dataset_id]
        ).fetchall():
            parts[split].append((int(segment), packing.from_bytes(raw_x, shape), packing.from_bytes(raw_y, ())))
            if split == "train":
                stored += len(raw_x) + len(raw_y)
        specs = [
            ModelSpec(model, params, shape, classes, int(seed))
            for params, seed in conn.execute(
                "SELECT params, seed FROM configs WHERE workload_id = %s ORDER BY config_id", [workload_id]
            ).fetchall()
        ]
    train, validation = parts["train"], parts["validation"]
    np.savez(
        path,
        x=np.concatenate([p[1] for p in train]),
        y=np.concatenate([p[2] for p in train]),
        segment=np.concatenate([np.full(len(p[2]), p[0]) for p in train]),
        val_x=np.concatenate([p[1] for p in validation]),
        val_y=np.concatenate([p[2] for p in validation]),
    )
    return specs, stored, sum(len(p[2]) for p in validation)


def mop_history(dsn: str, workload_id: int) -> dict[str, list[tuple[int, float, float]]]:
    history: dict[str, list[tuple[int, float, float]]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for params, epoch, val_loss, val_acc in conn.execute(
            "SELECT c.params, m.epoch, m.val_loss, m.val_metric FROM epoch_metrics m JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s ORDER BY c.config_id, m.epoch",
            [workload_id],
        ).fetchall():
            history.setdefault(label(params), []).append((int(epoch), float(val_loss), float(val_acc)))
    return history
