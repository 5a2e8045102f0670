"""The model state codec: what hops between segments.

A state is an ordered list of numpy arrays (model variables, then optimizer
variables) plus a small JSON header. Layout::

    b"CRBS" | uint16 format version | uint32 header length | header JSON | array bytes

The header lists each array's dtype and shape, so decoding checks the byte count
against the shapes and never guesses. Arrays round-trip bit-exactly.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"CRBS"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")


class StateFormatError(ValueError):
    """Bytes that are not a state this version can read."""


@dataclass
class ModelState:
    model_variables: list[np.ndarray]
    optimizer_variables: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def buffers(self) -> list[bytes | memoryview]:
        """The encoding in pieces: the prefix and header, then each array's own (C-contiguous) buffer, so a
        file can take them without a state-sized copy first."""
        arrays = [np.asarray(a, order="C") for a in (*self.model_variables, *self.optimizer_variables)]
        header = json.dumps(
            {
                "model": len(self.model_variables),
                "arrays": [[a.dtype.str, list(a.shape)] for a in arrays],
                "meta": self.meta,
            }
        ).encode()
        return [_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header, *(a.data for a in arrays)]

    def encode(self) -> bytes:
        # One copy into the result; tobytes first would make two.
        return b"".join(self.buffers())

    @classmethod
    def decode(cls, raw: bytes | memoryview | mmap.mmap, *, copy: bool = True) -> ModelState:
        """``copy=False``: read-only arrays over ``raw`` (no copy of hundreds of MB), for a caller that only
        reads them, such as ``training.restore``; ``raw`` may be a state file's read-only map."""
        if len(raw) < _PREFIX.size:
            raise StateFormatError(f"state is {len(raw)} bytes, too short for a header")
        magic, version, header_len = _PREFIX.unpack_from(raw)
        if magic != MAGIC:
            raise StateFormatError("not a cerebro model state (bad magic)")
        if version != FORMAT_VERSION:
            raise StateFormatError(f"state format version {version}; this build reads {FORMAT_VERSION}")
        offset = _PREFIX.size + header_len
        if offset > len(raw):
            raise StateFormatError(f"state truncated inside its header: needs {offset} bytes, has {len(raw)}")
        try:
            header = json.loads(bytes(raw[_PREFIX.size : offset]))
            layout, split, meta = header["arrays"], int(header["model"]), header["meta"]
        except (ValueError, KeyError, TypeError) as error:
            raise StateFormatError(f"state header is unreadable: {error}") from None
        arrays = []
        for dtype_str, shape in layout:
            dtype = np.dtype(dtype_str)
            count = int(np.prod(shape, dtype=np.int64))
            end = offset + count * dtype.itemsize
            if end > len(raw):
                raise StateFormatError(f"state truncated: needs {end} bytes, has {len(raw)}")
            array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
            arrays.append(array.copy() if copy else array)
            offset = end
        if offset != len(raw):
            raise StateFormatError(f"state has {len(raw) - offset} trailing bytes")
        return cls(arrays[:split], arrays[split:], meta)
