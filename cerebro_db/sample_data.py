"""Real and synthetic sample tables for the demo, tests and benchmarks."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

#: Debian package dataset-fashion-mnist
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_fashion_mnist(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels uint8 [n]) from the IDX files of the Debian package."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images_path = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise FileNotFoundError(f"{images_path} is missing; install the Debian package dataset-fashion-mnist")
    with gzip.open(images_path) as f:
        _, count, rows, cols = struct.unpack(">IIII", f.read(16))
        images = np.frombuffer(f.read(), dtype=np.uint8).reshape(count, rows, cols)
    with gzip.open(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz") as f:
        f.read(8)
        labels = np.frombuffer(f.read(), dtype=np.uint8)
    return images[:limit], labels[:limit]


def load_image_table(conn: psycopg.Connection, table: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Create ``table(id int, label int, pixels bytea)`` holding raw uint8 pixels, if it is missing."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    if exists and exists[0]:
        return
    name = sql.Identifier(table)
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, label int NOT NULL, pixels bytea NOT NULL)").format(name)
    )
    with conn.cursor().copy(sql.SQL("COPY {} (id, label, pixels) FROM STDIN").format(name)) as copy:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            copy.write_row((i, int(label), image.tobytes()))
    conn.commit()


def load_fashion_mnist(conn: psycopg.Connection, table: str, limit: int | None = None) -> None:
    load_image_table(conn, table, *read_fashion_mnist("train", limit))


def synthetic_tabular(rows: int, features: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs: a learnable task of any size."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    labels = rng.integers(0, classes, size=rows)
    return (centers[labels] + rng.normal(size=(rows, features))).astype(np.float32), labels


def load_tabular_table(conn: psycopg.Connection, table: str, x: np.ndarray, y: np.ndarray) -> None:
    """Create ``table(id, f0 .. fN real, label int)``."""
    columns = [sql.Identifier(f"f{i}") for i in range(x.shape[1])]
    name = sql.Identifier(table)
    conn.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {}, label int NOT NULL)").format(
            name, sql.SQL(", ").join(sql.SQL("{} real").format(c) for c in columns)
        )
    )
    with conn.cursor().copy(
        sql.SQL("COPY {} (id, {}, label) FROM STDIN").format(name, sql.SQL(", ").join(columns))
    ) as copy:
        for i, (features, label) in enumerate(zip(x, y, strict=True)):
            copy.write_row((i, *map(float, features), int(label)))
    conn.commit()
