"""cerebro_plpy.packing: array_send decoding, pixels, normalization, labels, splits and shards."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from cerebro_plpy import packing
from cerebro_plpy.packing import Normalization, PackingError

FLOAT4_OID = 700
FLOAT8_OID = 701


def array_send(values: list[float] | np.ndarray, element: str, *, lower_bound: int = 1) -> bytes:
    """Bytes exactly as PostgreSQL's array_send() emits a float4[] / float8[] without NULLs."""
    array = np.asarray(values, dtype=np.float64)
    oid, fmt, width = (FLOAT4_OID, ">f", 4) if element == "float4" else (FLOAT8_OID, ">d", 8)
    if array.size == 0:
        # An empty array has no dimensions at all: ndim 0, no (length, lower bound) pairs.
        return struct.pack(">iii", 0, 0, oid)
    out = [struct.pack(">iii", array.ndim, 0, oid)]
    out += [struct.pack(">ii", length, lower_bound) for length in array.shape]
    out += [struct.pack(">i", width) + struct.pack(fmt, float(value)) for value in array.ravel()]
    return b"".join(out)


def array_send_with_null(values: list[float | None], element: str) -> bytes:
    """A 1-D array containing NULLs: has-null flag 1 and byte length -1 for each NULL."""
    oid, fmt, width = (FLOAT4_OID, ">f", 4) if element == "float4" else (FLOAT8_OID, ">d", 8)
    out = [struct.pack(">iii", 1, 1, oid), struct.pack(">ii", len(values), 1)]
    for value in values:
        out.append(struct.pack(">i", -1) if value is None else struct.pack(">i", width) + struct.pack(fmt, value))
    return b"".join(out)


# --- decode_array_send -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["float4", "float8"])
def test_decode_array_send_1d(element: str) -> None:
    values = [1.5, -2.25, 0.0, 1024.0, -0.125]
    decoded = packing.decode_array_send(array_send(values, element), element)
    assert decoded.dtype == np.float32
    assert decoded.shape == (5,)
    assert decoded.tolist() == values


def test_decode_array_send_float8_rounds_to_float32() -> None:
    values = [0.1, 1e-3, 123456.789]
    decoded = packing.decode_array_send(array_send(values, "float8"), "float8")
    np.testing.assert_array_equal(decoded, np.array(values, dtype=np.float32))


def test_decode_array_send_float4_reads_big_endian_float4_not_float8() -> None:
    # 3 float4 elements: 8-byte records each; reading them as float8 would misalign everything.
    values = np.array([3.0, 7.5, -1.0], dtype=np.float32)
    raw = array_send(values, "float4")
    assert len(raw) == 12 + 8 + 3 * 8
    np.testing.assert_array_equal(packing.decode_array_send(raw, "float4"), values)


@pytest.mark.parametrize("element", ["float4", "float8"])
@pytest.mark.parametrize("lower_bound", [1, 0])
def test_decode_array_send_2d_is_row_major(element: str, lower_bound: int) -> None:
    matrix = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    decoded = packing.decode_array_send(array_send(matrix, element, lower_bound=lower_bound), element)
    assert decoded.dtype == np.float32
    assert decoded.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("element", ["float4", "float8"])
def test_decode_array_send_empty(element: str) -> None:
    raw = array_send([], element)
    assert len(raw) == 12
    decoded = packing.decode_array_send(raw, element)
    assert decoded.dtype == np.float32
    assert decoded.shape == (0,)


@pytest.mark.parametrize("element", ["float4", "float8"])
def test_decode_array_send_null_raises(element: str) -> None:
    with pytest.raises(PackingError, match="NULL"):
        packing.decode_array_send(array_send_with_null([1.0, None, 3.0], element), element)


# --- decode_pixels -----------------------------------------------------------------------------------------------


def test_decode_pixels_uint8() -> None:
    decoded = packing.decode_pixels(bytes([0, 1, 128, 255]), 4)
    assert decoded.dtype == np.float32
    assert decoded.tolist() == [0.0, 1.0, 128.0, 255.0]


def test_decode_pixels_float32() -> None:
    values = np.array([0.5, -3.25, 1e6], dtype="<f4")
    decoded = packing.decode_pixels(values.tobytes(), 3)
    assert decoded.dtype == np.float32
    assert decoded.tolist() == [0.5, -3.25, 1e6]


@pytest.mark.parametrize("length", [5, 11, 13, 0])
def test_decode_pixels_wrong_length_names_byte_counts(length: int) -> None:
    with pytest.raises(PackingError, match=rf"has {length} bytes.* 3 \(uint8\) or 12 \(float32\)"):
        packing.decode_pixels(bytes(length), 3)


# --- Normalization -----------------------------------------------------------------------------------------------


def test_normalization_standard_per_feature() -> None:
    x = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    norm = Normalization.fit("standard", x, (2,))
    assert norm.method == "standard"
    assert norm.shift.tolist() == [2.0, 20.0]
    assert norm.scale.tolist() == [1.0, 10.0]
    out = norm.apply(x)
    assert out.dtype == np.float32
    assert out.tolist() == [[-1.0, -1.0], [1.0, 1.0]]


def test_normalization_standard_gives_zero_mean_unit_std() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 3)) * [1.0, 5.0, 100.0] + [0.0, -3.0, 42.0]).astype(np.float32)
    norm = Normalization.fit("standard", x, (3,))
    np.testing.assert_allclose(norm.shift, x.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(norm.scale, x.astype(np.float64).std(axis=0))
    out = norm.apply(x)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-5)


def test_normalization_minmax_per_feature() -> None:
    x = np.array([[1.0, 10.0], [3.0, 50.0], [2.0, 30.0]], dtype=np.float32)
    norm = Normalization.fit("minmax", x, (2,))
    assert norm.shift.tolist() == [1.0, 10.0]
    assert norm.scale.tolist() == [2.0, 40.0]
    assert norm.apply(x).tolist() == [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]


def test_normalization_none_is_identity() -> None:
    x = np.array([[1.0, 10.0, -7.0], [3.0, 50.0, 2.5]], dtype=np.float32)
    norm = Normalization.fit("none", x, (3,))
    assert norm.shift.tolist() == [0.0, 0.0, 0.0]
    assert norm.scale.tolist() == [1.0, 1.0, 1.0]
    out = norm.apply(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_normalization_constant_feature_gets_scale_one(method: str) -> None:
    x = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 3.0]], dtype=np.float32)
    norm = Normalization.fit(method, x, (2,))
    assert norm.scale[0] == 1.0
    assert norm.shift[0] == 5.0
    out = norm.apply(x)
    assert np.all(np.isfinite(out))
    assert out[:, 0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("flat", [True, False])
def test_normalization_per_channel_for_images(flat: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(20, 4, 5, 3)).astype(np.float32)
    images[..., 1] += 1000.0  # channels with clearly different statistics
    images[..., 2] *= 0.01
    x = images.reshape(20, -1) if flat else images
    norm = Normalization.fit("standard", x, (4, 5, 3))
    assert norm.shift.shape == (3,)
    assert norm.scale.shape == (3,)
    per_channel = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(norm.shift, per_channel.mean(axis=0))
    np.testing.assert_allclose(norm.scale, per_channel.std(axis=0))
    out = norm.apply(x)
    assert out.shape == x.shape
    assert out.dtype == np.float32
    channels = out.reshape(-1, 3)
    np.testing.assert_allclose(channels.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(channels.std(axis=0), 1.0, atol=1e-4)


def test_normalization_minmax_per_channel() -> None:
    images = np.zeros((2, 2, 2, 2), dtype=np.float32)
    images[0, :, :, 0] = [[0, 1], [2, 3]]
    images[1, :, :, 0] = [[4, 5], [6, 8]]
    images[..., 1] = 7.0  # constant channel
    norm = Normalization.fit("minmax", images.reshape(2, -1), (2, 2, 2))
    assert norm.shift.tolist() == [0.0, 7.0]
    assert norm.scale.tolist() == [8.0, 1.0]
    out = norm.apply(images)
    assert out[1, 1, 1, 0] == 1.0
    assert out[0, 0, 1, 0] == 0.125
    assert np.all(out[..., 1] == 0.0)


def test_normalization_tabular_uses_train_statistics_on_other_rows() -> None:
    train = np.array([[0.0], [2.0]], dtype=np.float32)
    norm = Normalization.fit("minmax", train, (1,))
    assert norm.apply(np.array([[4.0], [-2.0]], dtype=np.float32)).tolist() == [[2.0], [-1.0]]


def test_normalization_unknown_method() -> None:
    with pytest.raises(PackingError, match="unknown normalize 'zscore'; choose one of standard, minmax, none"):
        Normalization.fit("zscore", np.ones((3, 2), dtype=np.float32), (2,))


def test_normalization_empty_tabular_is_identity() -> None:
    norm = Normalization.fit("standard", np.empty((0, 4), dtype=np.float32), (4,))
    assert norm.shift.tolist() == [0.0] * 4
    assert norm.scale.tolist() == [1.0] * 4


def test_normalization_empty_images_is_identity() -> None:
    norm = Normalization.fit("standard", np.empty((0, 12), dtype=np.float32), (2, 2, 3))
    assert norm.shift.tolist() == [0.0] * 3
    assert norm.scale.tolist() == [1.0] * 3


def test_normalization_grayscale_hxw_is_one_channel() -> None:
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, size=(10, 4, 3)).astype(np.float32)
    norm = Normalization.fit("standard", images.reshape(10, -1), (4, 3))
    assert norm.shift.shape == (1,)
    np.testing.assert_allclose(norm.shift, [images.astype(np.float64).mean()])


# --- encode_labels -----------------------------------------------------------------------------------------------


def test_encode_labels_ints() -> None:
    y, classes = packing.encode_labels([3, 1, 2, 1, 3])
    assert classes == [1, 2, 3]
    assert y.dtype == np.float32
    assert y.tolist() == [2.0, 0.0, 1.0, 0.0, 2.0]


def test_encode_labels_strings() -> None:
    y, classes = packing.encode_labels(["dog", "cat", "dog", "bird"])
    assert classes == ["bird", "cat", "dog"]
    assert y.tolist() == [2.0, 1.0, 2.0, 0.0]


def test_encode_labels_null() -> None:
    with pytest.raises(PackingError, match="NULL"):
        packing.encode_labels([1, None, 2])


@pytest.mark.parametrize(("labels", "count"), [(["a", "a", "a"], 1), ([], 0)])
def test_encode_labels_needs_two_classes(labels: list[str], count: int) -> None:
    with pytest.raises(PackingError, match=rf"has {count} distinct value\(s\); classification needs at least 2"):
        packing.encode_labels(labels)


# --- shuffle_split -----------------------------------------------------------------------------------------------


def test_shuffle_split_sizes_disjoint_and_complete() -> None:
    train, validation = packing.shuffle_split(100, 0.2, seed=3)
    assert len(train) == 80
    assert len(validation) == 20
    assert not set(train.tolist()) & set(validation.tolist())
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(100))
    # Actually shuffled, not the identity order.
    assert train.tolist() != sorted(train.tolist())


def test_shuffle_split_deterministic_per_seed() -> None:
    a_train, a_val = packing.shuffle_split(50, 0.3, seed=11)
    b_train, b_val = packing.shuffle_split(50, 0.3, seed=11)
    c_train, c_val = packing.shuffle_split(50, 0.3, seed=12)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_val, b_val)
    assert a_train.tolist() != c_train.tolist()


@pytest.mark.parametrize(
    ("rows", "fraction", "expected"), [(10, 0.01, 1), (10, 0.25, 2), (7, 0.5, 4), (1000, 0.1, 100)]
)
def test_shuffle_split_validation_size(rows: int, fraction: float, expected: int) -> None:
    train, validation = packing.shuffle_split(rows, fraction, seed=0)
    assert len(validation) == expected
    assert len(train) == rows - expected


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_shuffle_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(PackingError, match=r"validation_fraction must be in \(0, 1\)"):
        packing.shuffle_split(10, fraction, seed=0)


# --- shard_buffers -----------------------------------------------------------------------------------------------


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.float32)  # y == row position, so buffers reveal which rows they hold
    return x, y


@pytest.mark.parametrize(("num_segments", "buffer_rows"), [(1, 1000), (3, 4), (4, 1), (2, 7)])
def test_shard_buffers_layout(num_segments: int, buffer_rows: int) -> None:
    x, y = _rows(53)
    train, validation = packing.shuffle_split(53, 0.2, seed=5)
    buffers = packing.shard_buffers(x, y, train, validation, num_segments=num_segments, buffer_rows=buffer_rows)

    assert [b.buffer_id for b in buffers] == list(range(len(buffers)))
    for split, order in (("train", train), ("validation", validation)):
        mine = [b for b in buffers if b.split == split]
        # every row of the split exactly once
        assert sorted(int(v) for b in mine for v in b.y) == sorted(order.tolist())
        for segment, expected in enumerate(np.array_split(order, num_segments)):
            held = [b for b in mine if b.segment == segment]
            assert all(1 <= b.rows <= buffer_rows for b in held)
            # segment s holds the s-th contiguous slice, in the shuffled order
            rows = np.concatenate([b.y for b in held]) if held else np.empty(0)
            assert rows.astype(int).tolist() == expected.tolist()
            for b in held:
                np.testing.assert_array_equal(b.x, x[b.y.astype(int)])
        assert {b.segment for b in mine} <= set(range(num_segments))


def test_shard_buffers_exact_counts() -> None:
    x, y = _rows(20)
    train = np.arange(10)
    validation = np.arange(10, 20)
    buffers = packing.shard_buffers(x, y, train, validation, num_segments=2, buffer_rows=3)
    summary = [(b.split, b.segment, b.y.astype(int).tolist()) for b in buffers]
    assert summary == [
        ("train", 0, [0, 1, 2]),
        ("train", 0, [3, 4]),
        ("train", 1, [5, 6, 7]),
        ("train", 1, [8, 9]),
        ("validation", 0, [10, 11, 12]),
        ("validation", 0, [13, 14]),
        ("validation", 1, [15, 16, 17]),
        ("validation", 1, [18, 19]),
    ]


def test_shard_buffers_errors() -> None:
    x, y = _rows(10)
    train, validation = np.arange(3), np.arange(3, 10)
    with pytest.raises(PackingError, match="num_segments must be at least 1, got 0"):
        packing.shard_buffers(x, y, train, validation, num_segments=0, buffer_rows=4)
    with pytest.raises(PackingError, match="buffer_rows must be at least 1, got 0"):
        packing.shard_buffers(x, y, train, validation, num_segments=1, buffer_rows=0)
    with pytest.raises(PackingError, match="3 training rows cannot fill 4 segments"):
        packing.shard_buffers(x, y, train, validation, num_segments=4, buffer_rows=4)


# --- bytes -------------------------------------------------------------------------------------------------------


def test_to_bytes_from_bytes_round_trip() -> None:
    array = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    raw = packing.to_bytes(array)
    assert len(raw) == 5 * 6 * 4
    back = packing.from_bytes(raw, (2, 3))
    assert back.shape == (5, 2, 3)
    assert back.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(back, array)


def test_to_bytes_converts_to_little_endian_float32() -> None:
    raw = packing.to_bytes(np.array([[1.5, -2.0]], dtype=np.float64).T)  # float64, non-contiguous
    assert raw == struct.pack("<ff", 1.5, -2.0)
    assert packing.from_bytes(raw, ()).tolist() == [1.5, -2.0]


def test_default_buffer_rows() -> None:
    assert packing.default_buffer_rows(784) == (16 * 1024 * 1024) // (4 * 784)
    assert packing.default_buffer_rows(0) == 4 * 1024 * 1024
    assert packing.default_buffer_rows(10**9) == 1


def test_a_damaged_buffer_is_refused_with_its_size_and_the_row_shape() -> None:
    with pytest.raises(packing.PackingError, match=r"3 bytes does not decode into rows of shape \(2, 2\)"):
        packing.from_bytes(b"\x00\x01\x02", (2, 2))


def test_read_buffers_fills_arrays_allocated_once_and_refuses_counts_that_do_not_add_up() -> None:
    rng = np.random.default_rng(0)
    pieces = [(rng.normal(size=(n, 2, 3)).astype(np.float32), rng.integers(0, 4, n).astype(np.float32)) for n in (3, 5)]
    buffers = [(x.tobytes(), y.tobytes()) for x, y in pieces]
    x, y = packing.read_buffers(iter(buffers), 8, (2, 3))
    expected = packing.from_buffers(buffers, (2, 3))
    assert x.tobytes() == expected[0].tobytes() and y.tobytes() == expected[1].tobytes()
    with pytest.raises(packing.PackingError, match="7 rows recorded"):
        packing.read_buffers(iter(buffers), 7, (2, 3))
    with pytest.raises(packing.PackingError, match="3 rows, 8 recorded"):
        packing.read_buffers(iter(buffers[:1]), 8, (2, 3))
    with pytest.raises(packing.PackingError, match="3 feature rows and 5 labels"):
        packing.read_buffers(iter([(buffers[0][0], buffers[1][1])]), 8, (2, 3))
