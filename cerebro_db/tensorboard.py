"""TensorBoard event files from ``epoch_metrics``: one run per config and split, so curves overlay."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Connection

from cerebro_db import client
from cerebro_db.cluster import default_home


def default_logdir() -> Path:
    return default_home() / "tensorboard"


def workload_dir(workload_id: int, name: str | None) -> str:
    """``w12-my-name`` (``w12`` without a name): TensorBoard's run names start with it, so they say which
    workload a curve is from. Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``-`` (no ``/``, no
    ``..``: the name stays one directory)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name or "").strip("-.")[:40]
    return f"w{workload_id}-{slug}" if slug else f"w{workload_id}"


def export(conn: Connection, workload_id: int, logdir: Path) -> Path:
    """Write ``logdir/w<id>-<name>/config-<c>/{train,validation}``; returns the workload's directory.

    Idempotent: the workload's earlier export (under any name it had) is replaced, never appended to, so each
    epoch is one step of its run however often this runs. TensorBoard's reload reads the rewritten files.
    """
    import tensorflow as tf  # slow to import: only here

    workload = client.workload(conn, workload_id)
    target = logdir / workload_dir(workload_id, workload["name"] if workload else None)
    for earlier in [*logdir.glob(f"w{workload_id}"), *logdir.glob(f"w{workload_id}-*")]:
        shutil.rmtree(earlier, ignore_errors=True)
    target.mkdir(parents=True)
    by_run: dict[tuple[int, str], list[tuple[int, float, float]]] = {}
    for row in client.learning_curves(conn, workload_id):
        by_run.setdefault((row["config_id"], "train"), []).append(
            (row["epoch"], row["train_loss"], row["train_metric"])
        )
        by_run.setdefault((row["config_id"], "validation"), []).append(
            (row["epoch"], row["val_loss"], row["val_metric"])
        )
    for (config_id, split), epochs in by_run.items():
        writer = tf.summary.create_file_writer(str(target / f"config-{config_id}" / split))
        with writer.as_default():
            for epoch, loss, metric in epochs:
                tf.summary.scalar("loss", loss, step=epoch)
                tf.summary.scalar("accuracy", metric, step=epoch)
        writer.close()
    return target


class Exporter:
    """Keeps workloads' event files current: re-exports one when its count of finished epochs changed since
    its last export. One per dashboard server (not per session), so two sessions watching a workload do not
    rewrite its files at once, and a workload is exported once per new epoch, not once per viewer."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._exported: dict[int, int] = {}  # workload -> its epochs_done at its last export
        self._lock = threading.Lock()

    def refresh(self, conn: Connection, workloads: Iterable[client.Row]) -> list[int]:
        """Export those of ``workloads`` (rows of :func:`client.workloads`) whose ``epochs_done`` moved;
        returns their ids. The count is the one read before the export: an epoch finishing meanwhile is
        exported now or at the next refresh, never missed."""
        exported = []
        with self._lock:
            for workload in workloads:
                workload_id, epochs = workload["workload_id"], workload["epochs_done"]
                if self._exported.get(workload_id) != epochs:
                    export(conn, workload_id, self.logdir)
                    self._exported[workload_id] = epochs
                    exported.append(workload_id)
        return exported


def run_filter(workload_ids: Iterable[int]) -> str:
    """TensorBoard's run filter (a regex) for the runs :func:`export` writes of these workloads."""
    return f"^w({'|'.join(str(workload_id) for workload_id in workload_ids)})[-/]"
