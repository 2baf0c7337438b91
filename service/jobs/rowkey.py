"""The prediction cache's key for one typed row: its values hashed in a canonical byte form,
so the same row sent as an object, a list, or read from a file hashes alike.

An all-number row hashes as its float64 bytes, exactly as `cache.cache_key` hashes numeric
rows, so entries written before types stay valid. Otherwise each value is a type tag and a
fixed-width or length-prefixed payload (no two rows share bytes): null (NaN included) `N`,
number `f` + float64, integer `i` + int64, boolean `b` + one byte, string `s` + length +
UTF-8, datetime `t` + microseconds since the epoch (UTC).
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import numpy as np

from service.models.modelinput import Batch
from service.models.schema import ColumnType, InputSchema

_F64, _I64, _LEN = struct.Struct("<d"), struct.Struct("<q"), struct.Struct("<I")


def row_digest(batch: Batch, schema: InputSchema, row: int = 0) -> str:
    """A 128-bit hex digest of row `row` of the batch (see module doc)."""
    if schema.numeric_only:
        values = (batch[row] if isinstance(batch, np.ndarray) else np.array(
            [batch.column(j)[row].as_py() for j in range(batch.num_columns)], dtype=float))
        data = np.ascontiguousarray(values, dtype="<f8").tobytes()
    else:
        data = b"".join(_value(batch.column(j), row, c.type)
                        for j, c in enumerate(schema.columns))
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _value(array: Any, row: int, kind: ColumnType) -> bytes:
    value = array[row].as_py()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return b"N"
    if kind is ColumnType.NUMBER:
        return b"f" + _F64.pack(float(value))
    if kind is ColumnType.INTEGER:
        return b"i" + _I64.pack(int(value))
    if kind is ColumnType.BOOLEAN:
        return b"b" + (b"\x01" if value else b"\x00")
    if kind is ColumnType.DATETIME:
        import pyarrow as pa

        micros = array.slice(row, 1).cast(pa.int64())[0].as_py()
        return b"t" + _I64.pack(micros)
    text = str(value).encode()
    return b"s" + _LEN.pack(len(text)) + text
