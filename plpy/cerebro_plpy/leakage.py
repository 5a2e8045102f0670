"""Exact duplicate rows of a prepared dataset: validation rows that copy a training row (the splits may leak into
each other) and training rows that copy another training row.

A row is its float32 features and its label, as stored; two rows are copies when both are equal (a row with the
same features and another label is label noise, not a leak: a model that learned the training row gets the
validation row wrong). Each row is hashed once (8 bytes of BLAKE2b) buffer by buffer, so memory holds 8 bytes a
row, never the rows. Two different rows share a hash with probability 2^-64: over 10^5 rows, about 3e-10 that a
count is off by one.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cerebro_plpy import packing
from cerebro_plpy.packing import PackingError
from cerebro_plpy.plpy_adapter import Database

HASH = np.dtype("<u8")

_SHAPE_SQL = "SELECT feature_shape FROM datasets WHERE dataset_id = $1"
# One buffer at a time (a few MB each by default): the rows never sit in memory together.
_BUFFERS_SQL = "SELECT x, y FROM dataset_buffers WHERE dataset_id = $1 AND split = $2 ORDER BY buffer_id"


@dataclass(frozen=True)
class Duplicates:
    train_rows: int
    validation_rows: int
    #: Training rows equal to an earlier training row (rows beyond each one's first copy).
    train_duplicates: int
    #: Validation rows equal to some training row.
    validation_duplicates: int


def row_hashes(x: bytes, y: bytes, row_size: int) -> np.ndarray:
    """One 8-byte hash per row of a stored buffer (``row_size`` float32 features and a float32 label a row)."""
    features = packing.from_bytes(x, (row_size,))
    labels = packing.from_bytes(y, ())
    if len(features) != len(labels):
        raise PackingError(f"a buffer of {len(features)} feature rows has {len(labels)} labels")
    # + 0 turns -0.0 into 0.0: rows equal as numbers hash alike. The label as one more column: one hash call a row.
    rows = np.ascontiguousarray(np.column_stack([features + np.float32(0), labels]), dtype=packing.FLOAT32)
    data = rows.data.cast("B")
    width = rows.shape[1] * packing.FLOAT32.itemsize
    digests = b"".join(
        hashlib.blake2b(data[i * width : (i + 1) * width], digest_size=HASH.itemsize).digest() for i in range(len(rows))
    )
    return np.frombuffer(digests, dtype=HASH)


def count_duplicates(train: Iterable[np.ndarray], validation: Iterable[np.ndarray]) -> Duplicates:
    """Count copies among the row hashes of the training split and of the validation split (each an iterable of
    per-buffer hash arrays, read once)."""
    train_hashes = np.concatenate([np.empty(0, dtype=HASH), *train])
    distinct = np.unique(train_hashes)
    validation_rows = validation_duplicates = 0
    for hashes in validation:
        validation_rows += len(hashes)
        validation_duplicates += int(np.count_nonzero(np.isin(hashes, distinct)))
    return Duplicates(len(train_hashes), validation_rows, len(train_hashes) - len(distinct), validation_duplicates)


def dataset_duplicates(db: Database, dataset_id: int) -> dict[str, Any]:
    """:class:`Duplicates` of a stored dataset as a dict, with the ``seconds`` the count took."""
    found = db.query(_SHAPE_SQL, ["int4"], [dataset_id])
    if not found:
        raise PackingError(f"unknown dataset {dataset_id}")
    row_size = math.prod(found[0]["feature_shape"])

    def hashes(split: str) -> Iterator[np.ndarray]:
        for buffers in db.batches(_BUFFERS_SQL, ["int4", "text"], [dataset_id, split], 1):
            for buffer in buffers:
                yield row_hashes(buffer["x"], buffer["y"], row_size)

    tick = time.perf_counter()
    counts = count_duplicates(hashes("train"), hashes("validation"))
    return {**asdict(counts), "seconds": time.perf_counter() - tick}
