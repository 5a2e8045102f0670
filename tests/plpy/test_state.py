"""cerebro_plpy.state: the model state codec round-trips bit-exactly and rejects foreign bytes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from cerebro_plpy.state import FORMAT_VERSION, MAGIC, ModelState, StateFormatError

PREFIX = struct.Struct("<4sHI")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def sample_state() -> ModelState:
    rng = np.random.default_rng(42)
    kernel = rng.normal(size=(3, 4)).astype(np.float32)
    kernel[0, 0] = np.nan
    kernel[0, 1] = -0.0
    kernel[0, 2] = np.inf
    return ModelState(
        model_variables=[
            kernel,
            rng.normal(size=(5,)),  # float64
            np.array(7, dtype=np.int64),  # 0-d
            np.array(0.5, dtype=np.float32),  # 0-d
            np.empty((0,), dtype=np.float32),
            np.empty((0, 3), dtype=np.float64),
            np.array([[-(2**62), 2**62 + 1]], dtype=np.int64),
        ],
        optimizer_variables=[
            np.array(123, dtype=np.int64),
            np.array(1e-3, dtype=np.float32),
            rng.normal(size=(2, 2)).astype(np.float32),
        ],
        meta={"epoch": 2, "segment_order": [1, 0], "note": "résumé", "seed": 7, "nested": {"a": None}},
    )


def test_round_trip_bit_exact() -> None:
    state = sample_state()
    back = ModelState.decode(state.encode())
    assert len(back.model_variables) == 7
    assert len(back.optimizer_variables) == 3
    for original, decoded in zip(
        state.model_variables + state.optimizer_variables,
        back.model_variables + back.optimizer_variables,
        strict=True,
    ):
        assert same_bits(original, decoded), (original, decoded)
    assert back.meta == state.meta


def test_round_trip_shapes_and_dtypes() -> None:
    back = ModelState.decode(sample_state().encode())
    assert [(a.dtype.str, a.shape) for a in back.model_variables] == [
        ("<f4", (3, 4)),
        ("<f8", (5,)),
        ("<i8", ()),
        ("<f4", ()),
        ("<f4", (0,)),
        ("<f8", (0, 3)),
        ("<i8", (1, 2)),
    ]
    assert back.model_variables[2].item() == 7
    assert back.model_variables[6].tolist() == [[-(2**62), 2**62 + 1]]
    assert back.optimizer_variables[0].item() == 123
    # decoded arrays own their memory (a copy, not a view of the bytes), so they can be updated in place
    assert all(a.flags.writeable for a in back.model_variables + back.optimizer_variables)


def test_model_optimizer_split_preserved() -> None:
    a, b, c = (np.full(2, i, dtype=np.float32) for i in range(3))
    for model, optimizer in (([a], [b, c]), ([a, b], [c]), ([a, b, c], []), ([], [a, b, c]), ([], [])):
        back = ModelState.decode(ModelState(model, optimizer).encode())
        assert [x.tolist() for x in back.model_variables] == [x.tolist() for x in model]
        assert [x.tolist() for x in back.optimizer_variables] == [x.tolist() for x in optimizer]
        assert back.meta == {}


def test_empty_array_last() -> None:
    state = ModelState([np.ones(3, dtype=np.float32)], [np.empty((0,), dtype=np.float32)])
    back = ModelState.decode(state.encode())
    assert back.optimizer_variables[0].shape == (0,)
    assert back.model_variables[0].tolist() == [1.0, 1.0, 1.0]


def test_non_contiguous_and_big_endian_arrays() -> None:
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    big_endian = np.array([1.25, -3.5], dtype=">f8")
    back = ModelState.decode(ModelState([transposed, big_endian], []).encode())
    assert back.model_variables[0].shape == (3, 2)
    np.testing.assert_array_equal(back.model_variables[0], transposed)
    assert back.model_variables[1].tolist() == [1.25, -3.5]


def test_layout() -> None:
    raw = ModelState([np.array([1.0], dtype=np.float32)], [], {"k": 1}).encode()
    magic, version, header_len = PREFIX.unpack_from(raw)
    assert magic == b"CRBS" == MAGIC
    assert version == FORMAT_VERSION == 1
    header = json.loads(raw[PREFIX.size : PREFIX.size + header_len])
    assert header == {"model": 1, "arrays": [["<f4", [1]]], "meta": {"k": 1}}
    assert raw[PREFIX.size + header_len :] == struct.pack("<f", 1.0)


# --- errors ------------------------------------------------------------------------------------------------------


def test_bad_magic() -> None:
    raw = sample_state().encode()
    with pytest.raises(StateFormatError, match="bad magic"):
        ModelState.decode(b"XXXX" + raw[4:])


@pytest.mark.parametrize("version", [0, 2, 65535])
def test_wrong_version(version: int) -> None:
    raw = sample_state().encode()
    _, _, header_len = PREFIX.unpack_from(raw)
    forged = PREFIX.pack(MAGIC, version, header_len) + raw[PREFIX.size :]
    with pytest.raises(StateFormatError, match=f"state format version {version}; this build reads 1"):
        ModelState.decode(forged)


@pytest.mark.parametrize("cut", [1, 4, 8, 47])
def test_truncated_array_bytes(cut: int) -> None:
    raw = sample_state().encode()
    with pytest.raises(StateFormatError, match=rf"state truncated: needs \d+ bytes, has {len(raw) - cut}"):
        ModelState.decode(raw[:-cut])


@pytest.mark.parametrize("extra", [b"\0", b"abcd" * 3])
def test_trailing_bytes(extra: bytes) -> None:
    raw = sample_state().encode()
    with pytest.raises(StateFormatError, match=f"state has {len(extra)} trailing bytes"):
        ModelState.decode(raw + extra)


@pytest.mark.parametrize("raw", [b"", b"CRB", b"CRBS\x01\x00\x00\x00\x00"])
def test_too_short(raw: bytes) -> None:
    with pytest.raises(StateFormatError, match=f"state is {len(raw)} bytes, too short for a header"):
        ModelState.decode(raw)


def test_truncated_inside_header() -> None:
    raw = sample_state().encode()
    with pytest.raises(StateFormatError):
        ModelState.decode(raw[: PREFIX.size + 10])


# --- the hop's copies ------------------------------------------------------------------------------------------


def test_encode_is_the_arrays_bytes() -> None:
    """encode writes each array's buffer as it is (no tobytes copy first): the same bytes tobytes gives, for every
    layout (0-d, empty, big-endian, made contiguous)."""
    state = sample_state()
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    state.model_variables.append(transposed)
    raw = state.encode()
    arrays = [np.asarray(a, order="C") for a in (*state.model_variables, *state.optimizer_variables)]
    body = b"".join(a.tobytes() for a in arrays)
    assert raw.endswith(body) and len(raw) - len(body) == PREFIX.size + PREFIX.unpack_from(raw)[2]


def test_decode_without_copy_views_the_bytes() -> None:
    """copy=False (the unit's restore): read-only views of the state's bytes, bit-exact; the default still copies."""
    state = sample_state()
    raw = state.encode()
    views = ModelState.decode(raw, copy=False)
    for original, view in zip(
        state.model_variables + state.optimizer_variables,
        views.model_variables + views.optimizer_variables,
        strict=True,
    ):
        assert same_bits(original, view)
        assert not view.flags.writeable and not view.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        views.model_variables[0][0, 0] = 1.0
    assert all(a.flags.owndata for a in ModelState.decode(raw).model_variables)


def test_decode_without_copy_checks_the_same() -> None:
    raw = sample_state().encode()
    with pytest.raises(StateFormatError, match="state truncated"):
        ModelState.decode(raw[:-4], copy=False)
    with pytest.raises(StateFormatError, match="trailing bytes"):
        ModelState.decode(raw + b"\0", copy=False)
