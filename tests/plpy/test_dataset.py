"""The definer writers' checks: what prepare_dataset writes passes, a lie does not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cerebro_plpy import dataset, packing, text
from cerebro_plpy.packing import PackingError

ROW: dict[str, Any] = {
    "name": "d",
    "label_column": "y",
    "feature_columns": ["a", "b"],
    "feature_shape": [2],
    "num_classes": 2,
    "class_values": ["no", "yes"],
    "normalize": "standard",
    "norm_shift": [0.5, -1.0],
    "norm_scale": [2.0, 1.0],
    "num_segments": 2,
    "cluster_segments": 2,
    "buffer_rows": 3,
    "validation_fraction": 0.2,
    "train_rows": 8,
    "validation_rows": 2,
    "vocabulary": None,
    "replication": 1,
}


def buffer(rows: int = 2, **changes: Any) -> dict[str, Any]:
    x = np.arange(rows * 2, dtype=np.float32)
    y = np.arange(rows, dtype=np.float32) % 2
    return {
        "feature_shape": [2],
        "num_classes": 2,
        "vocabulary_size": None,
        "num_segments": 2,
        "buffer_rows": 3,
        "split": "train",
        "segment": 1,
        "rows": rows,
        "x": packing.to_bytes(x),
        "y": packing.to_bytes(y),
        **changes,
    }


def test_what_prepare_dataset_writes_passes() -> None:
    dataset.check_dataset(**ROW)
    dataset.check_dataset(**{**ROW, "normalize": "none", "norm_shift": [0, 0], "norm_scale": [1, 1], "vocabulary": []})
    dataset.check_buffer(**buffer())
    tokens = packing.to_bytes(np.array([[text.START, text.FIRST_WORD + 4]], dtype=np.float32))
    dataset.check_buffer(**buffer(rows=1, x=tokens, vocabulary_size=5))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"feature_shape": [3]}, "need 3 values each"),
        ({"num_classes": 3}, "count the distinct class_values"),
        ({"norm_scale": [2.0, float("inf")]}, "finite and positive"),
        ({"num_segments": 3}, "cluster's 2 segments"),
        ({"validation_rows": 0}, "at least one row"),
        ({"replication": 0}, "replication must be between 1 and num_segments = 2, got 0"),
        ({"replication": 3}, "replication must be between 1 and num_segments = 2, got 3"),
    ],
)
def test_a_dataset_row_that_lies_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PackingError, match=message):
        dataset.check_dataset(**{**ROW, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"x": packing.to_bytes(np.zeros(3))}, "got 12 and 8"),
        ({"y": packing.to_bytes(np.array([0, 2], dtype=np.float32))}, "class indices 0 to 1"),
        ({"y": packing.to_bytes(np.array([0, np.nan], dtype=np.float32))}, "class indices 0 to 1"),
        ({"x": packing.to_bytes(np.array([0, 1, np.inf, 3], dtype=np.float32))}, "NaN or infinite"),
        ({"vocabulary_size": 0}, "token ids must be whole numbers below 3"),
        ({"segment": 2}, "between 0 and 1"),
        ({"split": "test"}, "split must be one of"),
    ],
)
def test_a_buffer_that_does_not_decode_or_lies_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PackingError, match=message):
        dataset.check_buffer(**buffer(**changes))
