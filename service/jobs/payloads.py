"""How a bulk chunk's rows and results are stored: binary arrays, not JSON lists.

Inputs are the float64 rows as they are (`RAW` + bytes): random float64 barely compresses, and
zlib cost the API ~25 ms per 10,000-row chunk for nothing. A result is each array (predictions,
probabilities) in .npy form, behind `ARRAYS` and a length each; an array of labels (integers,
strings), which compresses well and cheaply, is zlib-compressed, floats are not. Chunks stored
before (zlib of float64 rows, zlib of JSON) are read as they were: a zlib stream starts with
0x78, neither magic does.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Any

import numpy as np

RAW = b"PQR0"  # float64 rows follow
ARRAYS = b"PQA0"  # then per array: name length, name, flag, length, .npy bytes
_PART = struct.Struct("<BBQ")  # name length, compressed?, payload length


def encode_rows(rows: np.ndarray) -> bytes:
    return RAW + np.ascontiguousarray(rows, dtype="<f8").tobytes()


def decode_rows(data: bytes, n_rows: int) -> np.ndarray:
    raw = data[len(RAW):] if data[:len(RAW)] == RAW else zlib.decompress(data)
    return np.frombuffer(raw, dtype="<f8").reshape(n_rows, -1)


def encode_result(result: dict[str, np.ndarray]) -> bytes:
    """Each array as .npy bytes; labels compressed, floats not (an object array, which .npy
    cannot hold without pickle, is stored as JSON instead)."""
    if any(a.dtype.hasobject for a in result.values()):
        return zlib.compress(json.dumps({k: v.tolist() for k, v in result.items()}).encode(), 1)
    parts = [ARRAYS]
    for name, array in result.items():
        out = io.BytesIO()
        np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
        payload = out.getvalue()
        packed = array.dtype.kind not in "fc"
        if packed:
            payload = zlib.compress(payload, 1)
        key = name.encode()
        parts += [_PART.pack(len(key), packed, len(payload)), key, payload]
    return b"".join(parts)


def decode_result(data: bytes) -> dict[str, Any]:
    """The arrays (or, for a chunk stored as JSON, lists) by name."""
    if data[:len(ARRAYS)] != ARRAYS:
        return json.loads(zlib.decompress(data))  # type: ignore[no-any-return]
    out: dict[str, Any] = {}
    view, at = memoryview(data), len(ARRAYS)
    while at < len(data):
        name_len, packed, size = _PART.unpack_from(view, at)
        at += _PART.size
        name = bytes(view[at:at + name_len]).decode()
        at += name_len
        payload = view[at:at + size]
        at += size
        raw = zlib.decompress(payload) if packed else payload
        out[name] = np.load(io.BytesIO(raw), allow_pickle=False)
    return out


def as_lists(result: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready: arrays as lists (lists stay as they are)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()}
