"""Bulk input in columns: Parquet and Arrow IPC bodies, a column per feature (any order, extra
columns ignored), read a record batch at a time (needs pyarrow) and cut into chunks like the
text formats: float64 rows for a model of plain numbers, typed record batches otherwise
(`typedread`).

Parquet keeps its footer at the end, so its body is spooled to a temporary file first. Arrow
is read as it arrives: the stream format, or the file format, which is the same stream behind
an 8-byte magic (the reader stops at the stream's end; the footer after it only repeats the
batches' offsets). One Arrow message (a record batch, its metadata) may take at most
`ARROW_MESSAGE` bytes: a client writes smaller batches rather than the API holding a huge one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np

from service.bulk import typedread
from service.bulk.arrowguard import GuardedStream
from service.bulk.parsing import Bounds, bad_row, read_exactly, too_many
from service.core.errors import InvalidInput
from service.models.modelinput import Batch
from service.models.registry import ModelInfo

ARROW_FILE_MAGIC = b"ARROW1\0\0"
ARROW_CONTINUATION = b"\xff\xff\xff\xff"


def parquet_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[Batch]:
    """A Parquet file, read a record batch of `chunk_rows` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        try:
            # pre_buffer (pyarrow's default) kept the buffers it read ahead: the API grew with
            # the body (a 10M-row typed upload: 345 MB); a local spool needs no read-ahead.
            source = pq.ParquetFile(spool, pre_buffer=False)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput("inputs", f"not a Parquet file: {exc}") from None
        columns = source.schema_arrow.names
        if model.plain:
            missing = [name for name in model.feature_names if name not in columns]
            if missing:
                raise InvalidInput("header", f"missing column {missing[0]!r}")
        present = typedread.check_header(columns, model.schema, bounds.max_name, strict=False)
        total = source.metadata.num_rows
        if not 1 <= total <= bounds.max_rows:
            raise InvalidInput("inputs", f"{total} rows; between 1 and {bounds.max_rows} per job")
        batches = source.iter_batches(batch_size=bounds.chunk_rows, columns=present)
        if model.plain:
            yield from _matrices(batches, model, bounds)
        else:
            yield from typedread.tables(batches, model.schema, bounds)


def arrow_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[Batch]:
    """An Arrow IPC stream (or file): its schema checked first (every feature a column), then
    only the feature columns decoded, batch by batch, each message checked before it is
    decoded (`arrowguard`: rows, and bytes once decompressed)."""
    import pyarrow as pa

    head = read_exactly(stream, len(ARROW_FILE_MAGIC))
    if head == ARROW_FILE_MAGIC:
        head = read_exactly(stream, len(ARROW_CONTINUATION))
    if not head.startswith(ARROW_CONTINUATION):  # every message since Arrow 0.15
        raise InvalidInput("inputs", "not an Arrow IPC stream: it starts with "
                                     f"{head[:4]!r}, not an Arrow message")
    source = GuardedStream(stream, head, bounds.max_rows)
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(source.first()))
        fields = feature_fields(schema, model) if model.plain else sorted(
            schema.get_field_index(name) for name in typedread.check_header(
                schema.names, model.schema, bounds.max_name, strict=False))
        options = pa.ipc.IpcReadOptions(included_fields=fields)
        batches = pa.ipc.open_stream(source, options=options)
        if model.plain:
            yield from _rechunk(_matrices(iter(batches), model, bounds), bounds.chunk_rows)
        else:
            yield from typedread.tables(batches, model.schema, bounds)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput("inputs", f"not an Arrow IPC stream: {str(exc)[:200]}") from None


def feature_fields(schema: Any, model: ModelInfo) -> list[int]:
    import pyarrow as pa

    fields = []
    for name in model.feature_names:
        found = schema.get_all_field_indices(name)
        if not found:
            raise InvalidInput("header", f"missing column {name!r}")
        if len(found) > 1:
            raise InvalidInput("header", f"column {name!r} appears twice")
        kind = schema.field(found[0]).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_decimal(kind)):
            raise InvalidInput("header", f"column {name!r} holds {kind}, not numbers")
        fields.append(found[0])
    return sorted(fields)


def _matrices(batches: Iterator[Any], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """Record batches as float64 matrices in signature order, each row checked."""
    import pyarrow as pa

    done = 0
    for batch in batches:
        if done + batch.num_rows > bounds.max_rows:
            raise too_many(bounds.max_rows)
        try:
            matrix = np.column_stack([
                batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                for name in model.feature_names])
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise bad_row(done + 1, f"rows {done + 1}-{done + batch.num_rows} hold a value "
                                    f"that is not a number: {exc}") from None
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            raise bad_row(done + int(np.argmin(finite)) + 1,
                          "must hold finite numbers only (no nulls)")
        done += len(matrix)
        if len(matrix):
            yield matrix
    if done == 0:
        raise InvalidInput("inputs", "the body has no rows")


def _rechunk(matrices: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Chunks of exactly `rows` rows (the last one fewer), whatever the batches' sizes."""
    held: list[np.ndarray] = []
    count = 0
    for matrix in matrices:
        held.append(matrix)
        count += len(matrix)
        if count >= rows:
            joined = np.concatenate(held)
            cut = len(joined) - len(joined) % rows
            yield from np.split(joined[:cut], cut // rows)
            held, count = [joined[cut:]], len(joined) - cut
    if count:
        yield np.concatenate(held)
