"""cerebro_plpy.leakage: row hashes of stored buffers, and the copies counted across and within the splits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from cerebro_plpy import leakage, packing
from cerebro_plpy.packing import PackingError


def hashes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return leakage.row_hashes(packing.to_bytes(x), packing.to_bytes(y), x.shape[1])


def test_equal_rows_hash_alike_and_any_difference_in_features_or_label_differs() -> None:
    x = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.5], [1.0, 2.0], [0.0, -0.0], [-0.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0, 0, 1, 1, 1], dtype=np.float32)
    h = hashes(x, y)
    assert h.dtype == leakage.HASH and len(h) == 6
    assert h[0] == h[1]  # a copy
    assert len({h[0], h[2], h[3]}) == 3  # another feature value, another label
    assert h[4] == h[5]  # -0.0 and 0.0 are equal values


def test_a_buffer_whose_labels_do_not_match_its_rows_is_refused() -> None:
    with pytest.raises(PackingError, match="3 feature rows has 2 labels"):
        leakage.row_hashes(packing.to_bytes(np.zeros((3, 2))), packing.to_bytes(np.zeros(2)), 2)


def buffers(x: np.ndarray, y: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """The hashes of ``x, y`` cut into buffers of ``rows`` rows, as prepare_dataset stores a split."""
    for start in range(0, len(y), rows):
        yield hashes(x[start : start + rows], y[start : start + rows])


def test_copies_are_counted_across_buffers_and_within_the_training_split() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)).astype(np.float32), rng.integers(0, 2, 50).astype(np.float32)
    train_x, train_y = x[:40].copy(), y[:40].copy()
    train_x[30:33], train_y[30:33] = train_x[0:3], train_y[0:3]  # 3 training rows copy earlier ones
    validation_x, validation_y = x[40:].copy(), y[40:].copy()
    validation_x[[0, 5, 9]], validation_y[[0, 5, 9]] = train_x[[39, 1, 20]], train_y[[39, 1, 20]]  # 3 copies
    validation_x[6], validation_y[6] = train_x[2], 1 - train_y[2]  # the features of a training row, another label
    counts = leakage.count_duplicates(buffers(train_x, train_y, 7), buffers(validation_x, validation_y, 4))
    assert counts == leakage.Duplicates(train_rows=40, validation_rows=10, train_duplicates=3, validation_duplicates=3)


def test_no_copies_and_empty_splits_count_zero() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.zeros(6, dtype=np.float32)
    assert leakage.count_duplicates(buffers(x[:4], y[:4], 2), buffers(x[4:], y[4:], 2)) == leakage.Duplicates(
        4, 2, 0, 0
    )
    assert leakage.count_duplicates([], buffers(x, y, 3)) == leakage.Duplicates(0, 6, 0, 0)


class Buffers:
    """A stand-in Database holding a dataset's buffers, as dataset_buffers would return them; it records the size
    of each batch it hands out."""

    def __init__(self, shape: list[int], splits: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
        self.shape, self.splits, self.batch_sizes = shape, splits, list[int]()

    def query(self, sql: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [{"feature_shape": self.shape}] if args[0] == 1 else []

    def batches(self, sql: str, types: Sequence[str], args: Sequence[Any], size: int) -> Iterator[list[dict[str, Any]]]:
        for x, y in self.splits[args[1]]:
            self.batch_sizes.append(size)
            yield [{"x": packing.to_bytes(x), "y": packing.to_bytes(y)}]

    def quote_ident(self, name: str) -> str:
        return name

    def check_interrupts(self) -> None:
        pass


def test_a_stored_dataset_is_read_one_buffer_at_a_time() -> None:
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    other = image + 1
    db = Buffers(
        [2, 2, 2],
        {
            "train": [(np.stack([image, other]), np.array([0, 1], dtype=np.float32))],
            "validation": [
                (image[None], np.array([0], dtype=np.float32)),
                (np.stack([other, other]), np.array([0, 1], dtype=np.float32)),
            ],
        },
    )
    counted = leakage.dataset_duplicates(db, 1)
    assert {k: v for k, v in counted.items() if k != "seconds"} == {
        "train_rows": 2,
        "validation_rows": 3,
        "train_duplicates": 0,
        "validation_duplicates": 2,
    }
    assert counted["seconds"] >= 0 and db.batch_sizes == [1, 1, 1]
    with pytest.raises(PackingError, match="unknown dataset 2"):
        leakage.dataset_duplicates(db, 2)
