"""TensorBoard event files from ``epoch_metrics``: one run per config and split, so curves overlay."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import Connection

from cerebro_db import client
from cerebro_db.cluster import default_home


def default_logdir() -> Path:
    return default_home() / "tensorboard"


def export(conn: Connection, workload_id: int, logdir: Path) -> Path:
    """Write ``logdir/workload_<id>/config_<c>/{train,validation}``; returns the workload's directory.

    An earlier export of the workload is replaced (TensorBoard would show both otherwise).
    """
    import tensorflow as tf  # slow to import: only here

    target = logdir / f"workload_{workload_id}"
    shutil.rmtree(target, ignore_errors=True)
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
        writer = tf.summary.create_file_writer(str(target / f"config_{config_id}" / split))
        with writer.as_default():
            for epoch, loss, metric in epochs:
                tf.summary.scalar("loss", loss, step=epoch)
                tf.summary.scalar("accuracy", metric, step=epoch)
        writer.close()
    return target
