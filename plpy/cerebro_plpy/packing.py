"""Turning source rows into the float32 buffers a dataset is stored as.

Everything here is pure numpy: the adapter feeds it the bytes PostgreSQL sends
and writes back what it returns. A buffer holds ``rows`` examples: ``x`` is the
row-major float32 little-endian matrix ``rows x prod(feature_shape)`` and ``y``
the float32 class indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

FLOAT32 = np.dtype("<f4")
#: Bytes of features per buffer when the user gives no ``buffer_rows``.
DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024
NORMALIZATIONS = ("standard", "minmax", "none")

# array_send() layout: ndim, has-null flag, element type oid, then (length, lower
# bound) per dimension, then each element as (int32 byte length, big-endian value).
_ARRAY_HEADER = np.dtype(">i4")


class PackingError(ValueError):
    """Source data that cannot be packed; the message names the bad value."""


def decode_array_send(raw: bytes, element: str) -> np.ndarray:
    """Decode one ``array_send(float4[] | float8[])`` value without Python floats.

    ``element`` is ``'float4'`` or ``'float8'``. Raises :class:`PackingError` on
    NULL elements, which the binary format marks with a byte length of -1.
    """
    header = np.frombuffer(raw, dtype=_ARRAY_HEADER, count=3)
    ndim, has_null = int(header[0]), int(header[1])
    if has_null:
        raise PackingError("feature array contains NULL elements")
    if ndim == 0:
        return np.empty(0, dtype=np.float32)
    dims = np.frombuffer(raw, dtype=_ARRAY_HEADER, count=2 * ndim, offset=12)[0::2]
    width = 4 if element == "float4" else 8
    record = np.dtype([("len", ">i4"), ("value", f">f{width}")])
    count = int(np.prod(dims))
    values = np.frombuffer(raw, dtype=record, count=count, offset=12 + 8 * ndim)["value"]
    return values.astype(np.float32)


def decode_pixels(raw: bytes, size: int) -> np.ndarray:
    """A ``bytea`` feature value: ``size`` uint8 values, or ``size`` float32 values."""
    if len(raw) == size:
        return np.frombuffer(raw, dtype=np.uint8).astype(np.float32)
    if len(raw) == 4 * size:
        return np.frombuffer(raw, dtype=FLOAT32).astype(np.float32)
    raise PackingError(
        f"bytea feature value has {len(raw)} bytes; feature_shape needs {size} (uint8) or {4 * size} (float32)"
    )


def normalization_width(feature_shape: tuple[int, ...]) -> int:
    """How many (shift, scale) pairs a normalization of ``feature_shape`` has (see :class:`Normalization`)."""
    return {1: feature_shape[0], 2: 1}.get(len(feature_shape), feature_shape[-1])


@dataclass(frozen=True)
class Normalization:
    """Affine scaling ``(x - shift) / scale``: per feature for flat (tabular) features, per
    channel for images (``HxWxC``: C channels; ``HxW``: one)."""

    method: str
    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, method: str, x: np.ndarray, feature_shape: tuple[int, ...]) -> Normalization:
        """Statistics from the training split only, so validation stays unseen."""
        if method not in NORMALIZATIONS:
            raise PackingError(f"unknown normalize {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
        width = normalization_width(feature_shape)
        flat = x.reshape(-1, width).astype(np.float64)
        if method == "none" or len(flat) == 0:
            return cls(method, np.zeros(width), np.ones(width))
        if method == "standard":
            shift, scale = flat.mean(axis=0), flat.std(axis=0)
        else:
            shift, scale = flat.min(axis=0), flat.max(axis=0) - flat.min(axis=0)
        # Constant features would divide by zero; leave them centred instead.
        return cls(method, shift, np.where(scale > 0, scale, 1.0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        shaped = x.reshape(-1, len(self.shift))
        out = (shaped - self.shift.astype(np.float32)) / self.scale.astype(np.float32)
        return out.reshape(x.shape).astype(np.float32)


def encode_labels(labels: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Class indices for ``labels`` and the sorted distinct values they index."""
    if any(label is None for label in labels):
        raise PackingError("label column contains NULL values")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise PackingError(f"label column has {len(classes)} distinct value(s); classification needs at least 2")
    index = {value: i for i, value in enumerate(classes)}
    return np.fromiter((index[v] for v in labels), dtype=np.float32, count=len(labels)), classes


def default_buffer_rows(feature_size: int) -> int:
    return max(1, DEFAULT_BUFFER_BYTES // (4 * max(1, feature_size)))


@dataclass(frozen=True)
class Buffer:
    split: str
    segment: int
    buffer_id: int
    x: np.ndarray
    y: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.y)


def shuffle_split(num_rows: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the training and validation splits, shuffled once with ``seed``.

    The training order is the order every epoch sees the rows in.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise PackingError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(num_rows)
    num_validation = max(1, round(num_rows * validation_fraction))
    return order[num_validation:], order[:num_validation]


def shard_buffers(
    x: np.ndarray,
    y: np.ndarray,
    train_order: np.ndarray,
    validation_order: np.ndarray,
    *,
    num_segments: int,
    buffer_rows: int,
) -> list[Buffer]:
    """Spread each split over the segments: segment ``s`` holds the ``s``-th
    contiguous slice of the shuffled split, cut into buffers of at most ``buffer_rows``."""
    if num_segments < 1:
        raise PackingError(f"num_segments must be at least 1, got {num_segments}")
    if buffer_rows < 1:
        raise PackingError(f"buffer_rows must be at least 1, got {buffer_rows}")
    if len(train_order) < num_segments:
        raise PackingError(
            f"{len(train_order)} training rows cannot fill {num_segments} segments; "
            "use fewer segments or a smaller validation_fraction"
        )
    buffers: list[Buffer] = []
    for split, rows in (("train", train_order), ("validation", validation_order)):
        for segment, shard in enumerate(np.array_split(rows, num_segments)):
            for start in range(0, len(shard), buffer_rows):
                part = shard[start : start + buffer_rows]
                buffers.append(Buffer(split, segment, len(buffers), x[part], y[part]))
    return buffers


def to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=FLOAT32).tobytes()


def from_bytes(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-copy float32 view of a stored buffer, reshaped to ``(-1, *shape)``."""
    row_bytes = FLOAT32.itemsize * math.prod(shape)
    if len(raw) % row_bytes:
        raise PackingError(
            f"a stored buffer of {len(raw)} bytes does not decode into rows of shape {shape} "
            f"({row_bytes} bytes each): the dataset is damaged; prepare it again"
        )
    return np.frombuffer(raw, dtype=FLOAT32).reshape((-1, *shape))


def read_buffers(
    buffers: Iterable[tuple[bytes, bytes]], rows: int, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of ``(x, y)`` buffers holding ``rows`` rows in all, each buffer copied into arrays allocated
    once as it comes: the peak is the arrays and one buffer (:func:`from_buffers` holds every buffer and the result)."""
    x = np.empty((rows, *shape), dtype=FLOAT32)
    y = np.empty(rows, dtype=FLOAT32)
    at = 0
    for raw_x, raw_y in buffers:
        features, labels = from_bytes(raw_x, shape), from_bytes(raw_y, ())
        if len(features) != len(labels) or at + len(labels) > rows:
            raise PackingError(
                f"stored buffers of {len(features)} feature rows and {len(labels)} labels after {at} rows do not add "
                f"up to the {rows} rows recorded: the buffers are damaged; drop and materialize them again"
            )
        x[at : at + len(labels)] = features
        y[at : at + len(labels)] = labels
        at += len(labels)
    if at != rows:
        raise PackingError(f"stored buffers hold {at} rows, {rows} recorded: drop and materialize them again")
    return x, y


def from_buffers(buffers: Iterable[tuple[bytes, bytes]], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of ``(x, y)`` buffers, concatenated in the order given."""
    pairs = list(buffers)
    return (
        np.concatenate([from_bytes(x, shape) for x, _ in pairs]),
        np.concatenate([from_bytes(y, ()) for _, y in pairs]),
    )
