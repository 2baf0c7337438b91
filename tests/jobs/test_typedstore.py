"""Typed inputs as stored bytes: all-number schemas keep the RAW float64 form (readable by
`payloads` and as it was before types); others are Arrow IPC; all read back as they were."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pytest

from service.core.errors import ModelLoadError
from service.jobs import payloads
from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.jobs.typedstore import DICTIONARY_ROWS, decode_batch, encode_batch
from service.models.schema import Column, ColumnType, InputSchema

NUMBERS = InputSchema.numbers(["a", "b"], nullable=True)
MIXED = InputSchema((
    Column("plan", ColumnType.STRING, nullable=True),
    Column("seats", ColumnType.INTEGER),
    Column("annual", ColumnType.BOOLEAN, nullable=True),
    Column("signup", ColumnType.DATETIME, nullable=True),
), frame=True)
BOUNDS = TypedBounds(max_rows=1000)


def test_all_number_batch_is_stored_as_raw_float64_rows_with_nan_for_missing() -> None:
    batch = parse_typed_rows([[1.5, None], [2, 3]], NUMBERS, BOUNDS)
    data = encode_batch(batch, NUMBERS)
    assert data.startswith(payloads.RAW)
    back = payloads.decode_rows(data, 2)  # what a worker of the previous release reads
    np.testing.assert_array_equal(back, [[1.5, np.nan], [2.0, 3.0]])
    np.testing.assert_array_equal(decode_batch(data, NUMBERS, 2), back)


def test_rows_stored_before_types_are_read_as_a_matrix() -> None:
    matrix = np.arange(6, dtype=np.float64).reshape(3, 2)
    for stored in (payloads.encode_rows(matrix), zlib.compress(matrix.tobytes())):
        np.testing.assert_array_equal(decode_batch(stored, NUMBERS, 3), matrix)


def test_typed_batch_round_trips_through_arrow_ipc() -> None:
    rows = [["pro", 3, True, "2024-05-01T10:00:00Z"], [None, 4, None, None],
            ["pro", 5, False, "2024-05-02"]]
    batch = parse_typed_rows(rows, MIXED, BOUNDS)
    data = encode_batch(batch, MIXED)
    back = decode_batch(data, MIXED, 3)
    assert back.schema.field("plan").type == pa.string()  # a few rows: stored plain
    assert back.to_pylist() == batch.to_pylist()
    many = pa.RecordBatch.from_arrays(
        [pa.concat_arrays([c] * (DICTIONARY_ROWS // 3 + 1)) for c in batch.columns],
        schema=batch.schema)
    back = decode_batch(encode_batch(many, MIXED), MIXED, many.num_rows)
    assert pa.types.is_dictionary(back.schema.field("plan").type)  # each plan stored once
    assert back.to_pylist() == many.to_pylist()


def test_stored_inputs_of_another_schema_are_refused() -> None:
    data = encode_batch(parse_typed_rows([["pro", 3, True, None]], MIXED, BOUNDS), MIXED)
    renamed = InputSchema((Column("tier", ColumnType.STRING, nullable=True),
                           *MIXED.columns[1:]), frame=True)
    with pytest.raises(ModelLoadError, match="expected"):
        decode_batch(data, renamed, 1)
    retyped = InputSchema((Column("plan", ColumnType.INTEGER), *MIXED.columns[1:]), frame=True)
    with pytest.raises(ModelLoadError, match="'plan' holds string"):
        decode_batch(data, retyped, 1)
    with pytest.raises(ModelLoadError, match="columns"):
        decode_batch(payloads.encode_rows(np.zeros((1, 3))), NUMBERS, 1)
