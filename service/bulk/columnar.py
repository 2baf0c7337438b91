"""Bulk input in columns: Parquet and Arrow IPC bodies, a numeric column per feature (any
order, extra columns ignored), read a record batch at a time (needs pyarrow) and cut into
chunks of float64 rows like the text formats.

Parquet keeps its footer at the end, so its body is spooled to a temporary file first. Arrow
is read as it arrives: the stream format, or the file format, which is the same stream behind
an 8-byte magic (the reader stops at the stream's end; the footer after it only repeats the
batches' offsets). One Arrow message (a record batch, its metadata) may take at most
`ARROW_MESSAGE` bytes: a client writes smaller batches rather than the API holding a huge one.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import numpy as np

from service.bulk.parsing import Bounds, bad_row, read_exactly, too_many
from service.core.errors import InvalidInput
from service.models.registry import ModelInfo

ARROW_MESSAGE = 64 * 1024 * 1024
ARROW_FILE_MAGIC = b"ARROW1\0\0"
ARROW_CONTINUATION = b"\xff\xff\xff\xff"


def parquet_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """A Parquet file, read a record batch of `chunk_rows` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        try:
            source = pq.ParquetFile(spool)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput("inputs", f"not a Parquet file: {exc}") from None
        columns = set(source.schema_arrow.names)
        missing = [name for name in model.feature_names if name not in columns]
        if missing:
            raise InvalidInput("header", f"missing column {missing[0]!r}")
        total = source.metadata.num_rows
        if not 1 <= total <= bounds.max_rows:
            raise InvalidInput("inputs", f"{total} rows; between 1 and {bounds.max_rows} per job")
        yield from _matrices(source.iter_batches(batch_size=bounds.chunk_rows,
                                                 columns=list(model.feature_names)),
                             model, bounds)


def arrow_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """An Arrow IPC stream (or file): its schema checked first (every feature a column of
    numbers), then only the feature columns decoded, batch by batch."""
    import pyarrow as pa

    head = read_exactly(stream, len(ARROW_FILE_MAGIC))
    if head == ARROW_FILE_MAGIC:
        head = read_exactly(stream, len(ARROW_CONTINUATION))
    if not head.startswith(ARROW_CONTINUATION):  # every message since Arrow 0.15
        raise InvalidInput("inputs", "not an Arrow IPC stream: it starts with "
                                     f"{head[:4]!r}, not an Arrow message")
    source = _Capped(stream, head)
    try:
        source.keep()  # the schema message is read twice: to choose the columns, then for good
        schema = pa.ipc.open_stream(source).schema
        fields = feature_fields(schema, model)
        source.rewind()
        options = pa.ipc.IpcReadOptions(included_fields=fields)
        batches = pa.ipc.open_stream(source, options=options)
        yield from _rechunk(_matrices(iter(batches), model, bounds), bounds.chunk_rows)
    except _TooLarge as exc:
        raise InvalidInput("inputs", f"an Arrow message of {exc.size:,} bytes; at most "
                                     f"{ARROW_MESSAGE:,}: write smaller record batches") from None
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


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _Capped(io.RawIOBase):
    """The body for pyarrow, which reads a message's metadata and then its body in one read
    each: a read of more than ARROW_MESSAGE bytes is refused before anything is allocated.
    Reads can be kept and given again (the schema is read twice)."""

    def __init__(self, stream: IO[bytes], head: bytes) -> None:
        super().__init__()
        self._stream = stream
        self._pending = head  # given before the stream's own bytes
        self._kept: list[bytes] | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > ARROW_MESSAGE:
            raise _TooLarge(-1 if size is None else size)
        data, self._pending = self._pending[:size], self._pending[size:]
        if len(data) < size:
            data += read_exactly(self._stream, size - len(data))
        if self._kept is not None:
            self._kept.append(data)
        return data

    def keep(self) -> None:
        self._kept = []

    def rewind(self) -> None:
        self._pending = b"".join(self._kept or []) + self._pending
        self._kept = None
