"""Typed inputs as stored bytes (a single job's inputs, a bulk chunk): an Arrow IPC stream, or
for an all-number schema the float64 rows as they were stored before types (`payloads.RAW`),
which stay the fastest to write and read and need no change to chunks already stored.

A stored value tells its own form: `payloads.RAW` starts float64 rows, an Arrow IPC stream
starts with its continuation marker 0xFFFFFFFF, and the oldest chunks (a zlib stream) start
with 0x78. Strings are dictionary-encoded on the way out (a column of a few plans in 10,000
rows keeps each plan once), in a batch of `DICTIONARY_ROWS` rows or more: a single job's row or
few would store nearly as much with it, and building it is a fifth of the API's cost of a
one-row typed job. Nothing is compressed: like float64, the stream is read far more
cheaply than it would be inflated, and the store is no bottleneck (see the commit's figures).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.core.errors import ModelLoadError
from service.jobs import payloads
from service.models.modelinput import Batch, as_matrix
from service.models.schema import ColumnType, InputSchema, arrow_schema

ARROW_STREAM = b"\xff\xff\xff\xff"

#: Rows from which a batch's strings are stored dictionary-encoded (see module doc).
DICTIONARY_ROWS = 64


def encode_batch(batch: Batch, schema: InputSchema) -> bytes:
    """A batch's stored form: RAW float64 rows for an all-number schema, else Arrow IPC."""
    if schema.numeric_only:
        return payloads.encode_rows(as_matrix(batch))
    import pyarrow as pa

    if isinstance(batch, np.ndarray):
        raise ValueError("a float64 matrix is the stored form of an all-number schema only")
    sink = pa.BufferOutputStream()
    stored = _dictionary_strings(batch, schema) if batch.num_rows >= DICTIONARY_ROWS else batch
    # Options given: without them pyarrow reads two environment variables on every call.
    with pa.ipc.new_stream(sink, stored.schema, options=pa.ipc.IpcWriteOptions()) as writer:
        writer.write_batch(stored)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def decode_batch(data: bytes, schema: InputSchema, n_rows: int) -> Batch:
    """Stored bytes back as a batch: a float64 matrix for RAW (and the oldest zlib) rows, a
    RecordBatch of the schema's types for Arrow, string columns left as stored (plain, or
    dictionary-encoded: the model input is built faster from them); the stored columns must be
    the schema's."""
    if data[:len(ARROW_STREAM)] != ARROW_STREAM:
        matrix = payloads.decode_rows(data, n_rows)
        if matrix.shape[1] != len(schema.columns):
            raise ModelLoadError(f"stored rows have {matrix.shape[1]} columns; the model takes "
                                 f"{len(schema.columns)}")
        return matrix
    import pyarrow as pa

    reader = pa.ipc.open_stream(pa.py_buffer(data))
    batches = list(reader)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if table.schema.names != schema.names or table.num_rows != n_rows:
        raise ModelLoadError(f"stored inputs hold columns {table.schema.names[:10]} and "
                             f"{table.num_rows} rows; expected {schema.names[:10]} and "
                             f"{n_rows}")
    _check_types(table.schema, schema)
    return table.combine_chunks().to_batches()[0]


def _dictionary_strings(batch: Any, schema: InputSchema) -> Any:
    import pyarrow as pa

    arrays, fields = [], []
    for i, column in enumerate(schema.columns):
        array = batch.column(i)
        if column.type is ColumnType.STRING:
            array = array.dictionary_encode()
        arrays.append(array)
        fields.append(pa.field(column.name, array.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _check_types(stored: Any, schema: InputSchema) -> None:
    import pyarrow as pa

    for field, expected in zip(stored, arrow_schema(schema), strict=True):
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if kind != expected.type:
            raise ModelLoadError(f"stored column {field.name!r} holds {kind}; the model's "
                                 f"schema says {expected.type}")
