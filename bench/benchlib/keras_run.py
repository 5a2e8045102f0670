"""Plain Keras in a fresh subprocess, on the rows and configs of a cerebro-db workload (bench/mop_vs_keras.py).

The parent exports the 1-segment dataset and the configs (:func:`export_keras_job`) and runs this file as a
script (:func:`run_keras`), so the child's TensorFlow thread settings take effect::

    python bench/benchlib/keras_run.py JOB single|default
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cerebro_db.cluster import server_environment
from cerebro_plpy import memory, packing


@dataclass
class KerasRun:
    """Plain Keras in a subprocess: one config after the other."""

    threads: str  # 'single' | 'default'
    configs: int
    epochs: int
    samples: int
    wall_s: float
    import_s: float
    warmup_s: float
    per_config: list[dict[str, float]] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s

    @property
    def label(self) -> str:
        return "Keras, 1 thread" if self.threads == "single" else "Keras, all cores"

    @property
    def val_metric(self) -> float:
        return statistics.fmean(c["val_metric"] for c in self.per_config)


def read_split(
    conn: psycopg.Connection[Any], dataset_id: int, split: str, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """All buffers of one split in buffer order (the order a 1-segment unit trains in)."""
    rows = conn.execute(
        "SELECT x, y FROM dataset_buffers WHERE dataset_id = %s AND split = %s ORDER BY buffer_id",
        [dataset_id, split],
    ).fetchall()
    x = np.concatenate([packing.from_bytes(r[0], shape) for r in rows])
    y = np.concatenate([packing.from_bytes(r[1], ()) for r in rows])
    return x, y


def export_keras_job(
    dsn: str, dataset: str, workload_id: int, args: argparse.Namespace, workdir: Path
) -> tuple[Path, float]:
    """Write the 1-segment dataset's splits and the workload's configs for the Keras subprocess."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        meta = conn.execute(
            "SELECT dataset_id, feature_shape, num_classes FROM datasets WHERE name = %s", [dataset]
        ).fetchone()
        assert meta is not None
        dataset_id, shape, num_classes = int(meta[0]), tuple(meta[1]), int(meta[2])
        train = read_split(conn, dataset_id, "train", shape)
        validation = read_split(conn, dataset_id, "validation", shape)
        configs = [
            {"params": params, "seed": seed}
            for params, seed in conn.execute(
                "SELECT params, seed FROM configs WHERE workload_id = %s ORDER BY config_id", [workload_id]
            ).fetchall()
        ]
    data = workdir / "data.npz"
    np.savez(data, x=train[0], y=train[1], val_x=validation[0], val_y=validation[1])
    job = workdir / "job.json"
    job.write_text(
        json.dumps(
            {
                "data": str(data),
                "model": args.model,
                "configs": configs,
                "input_shape": list(shape),
                "num_classes": num_classes,
                "epochs": args.epochs,
            }
        )
    )
    return job, time.perf_counter() - started


def run_keras(job: Path, threads: str, samples: int) -> KerasRun:
    """Plain Keras in a fresh Python process, so its TensorFlow thread settings take effect."""
    env = server_environment()  # what the segments' postmaster gets: OMP_NUM_THREADS=1, quiet TF
    if threads == "default":
        env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(job), threads],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the Keras subprocess ({threads} threads) failed:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return KerasRun(
        threads=threads,
        configs=len(report["per_config"]),
        epochs=report["epochs"],
        samples=samples,
        wall_s=report["wall_s"],
        import_s=report["import_s"],
        warmup_s=report["warmup_s"],
        per_config=report["per_config"],
    )


def _validation_timer(keras: Any, marks: list[float]) -> Any:
    """A callback appending the time at the start and at the end of each validation pass to ``marks``."""
    return keras.callbacks.LambdaCallback(
        on_test_begin=lambda logs=None: marks.append(time.perf_counter()),
        on_test_end=lambda logs=None: marks.append(time.perf_counter()),
    )


def keras_child(job_path: str, threads: str) -> None:
    """The subprocess: train each config with ``model.fit``, validating at each epoch end; print JSON."""
    from cerebro_plpy import training

    job = json.loads(Path(job_path).read_text())
    started = time.perf_counter()
    gd: dict[str, Any] = {}
    if threads == "single":
        training.tensorflow(gd)  # one intra-op and one inter-op thread, as in a segment
    else:
        import tensorflow as tf

        gd[training.GD_TENSORFLOW] = tf  # TensorFlow's default threading: all cores
    import keras

    import_s = time.perf_counter() - started

    data = np.load(job["data"])
    x, y, val_x, val_y = data["x"], data["y"], data["val_x"], data["val_y"]
    shape, classes, epochs = tuple(job["input_shape"]), int(job["num_classes"]), int(job["epochs"])
    specs = [training.ModelSpec(job["model"], c["params"], shape, classes, int(c["seed"])) for c in job["configs"]]

    # Warm the process like a segment backend: TensorFlow runtime and kernels, on a throwaway model.
    started = time.perf_counter()
    first = specs[0]
    throwaway = training.build_compiled(gd, training.ModelSpec(first.model, first.params, shape, classes, 0))
    few = min(len(y), 4 * int(first.params["batch_size"]))
    throwaway.fit(training.make_dataset(gd, x[:few], y[:few], first.params["batch_size"]), epochs=1, verbose=0)
    throwaway.evaluate(training.make_dataset(gd, val_x, val_y, memory.EVALUATION_BATCH), verbose=0)
    del throwaway
    warmup_s = time.perf_counter() - started

    per_config = []
    wall_started = time.perf_counter()
    for spec in specs:
        started = time.perf_counter()
        model = training.build_compiled(gd, spec)
        built = time.perf_counter()
        marks: list[float] = []
        timer = _validation_timer(keras, marks)
        history = model.fit(
            training.make_dataset(gd, x, y, spec.params["batch_size"]),
            validation_data=training.make_dataset(gd, val_x, val_y, memory.EVALUATION_BATCH),
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[timer],
        )
        fitted = time.perf_counter()
        validation_s = sum(end - begin for begin, end in zip(marks[0::2], marks[1::2], strict=True))
        per_config.append(
            {
                "build_s": built - started,
                "train_s": fitted - built - validation_s,
                "validation_s": validation_s,
                "val_metric": float(history.history[f"val_{training.METRIC}"][-1]),
            }
        )
    wall_s = time.perf_counter() - wall_started
    report = {"epochs": epochs, "wall_s": wall_s, "import_s": import_s, "warmup_s": warmup_s}
    print(json.dumps({**report, "per_config": per_config}))


if __name__ == "__main__":
    keras_child(sys.argv[1], sys.argv[2])
