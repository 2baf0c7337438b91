"""A worker's side of jobs by reference: read one chunk's rows from the input file (checked
against its directory again: a symlink swapped since the submit leads nowhere; a .npy header
checked again: a file replaced since the submit is refused, not misread). The result file is
written by `outputs`."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np

from service.bulk import formats, typedread
from service.bulk.lines import line_limit
from service.bulk.parsing import Bounds, valid_rows
from service.bulk.refs import Source, npy_header
from service.core.errors import InvalidInput
from service.models.modelinput import Batch
from service.models.registry import ModelInfo


def read_chunk(data_root: str, source_text: str, start: int, stop: int, model: ModelInfo
               ) -> Batch:
    """The chunk's rows in the model's schema (float64 rows for a model of plain numbers),
    each row checked."""
    source = Source.loads(source_text)
    real = source.real(data_root)
    if source.format == "npy":
        matrix = _npy_rows(real, source, start, stop, model)
        where = "row {} of " + source.name
        first = start
    elif source.format == "parquet":
        if not model.plain:
            return _typed_parquet_rows(real, start, stop, model, source.name)
        matrix = _parquet_rows(real, start, stop, model)
        where = f"row {{}} of row groups {start}-{stop - 1} of {source.name}"
        first = 0
    else:
        return _csv_rows(real, source, start, stop, model)
    nullable = None if model.plain else [c.nullable for c in model.schema.columns]
    finite = valid_rows(matrix, nullable)
    if not finite.all():
        raise InvalidInput(where.format(first + int(np.argmin(finite)) + 1),
                           "must hold finite numbers only" + (
                               " (NaN where a column may be missing)" if nullable else
                               " (no nulls)"))
    return matrix


def _npy_rows(real: Path, source: Source, start: int, stop: int, model: ModelInfo
              ) -> np.ndarray:
    """Rows [start, stop) of a .npy file whose header is still the one planned at submit
    (older jobs planned none: still C-ordered, of the model's width, at the same offset);
    header and rows are read through one open file, so a file swapped between is not mixed."""
    with open(real, "rb") as f:
        try:
            offset, header = npy_header(f, model.n_features)
        except InvalidInput as exc:
            raise InvalidInput(f"input {source.name}", "changed since the job was submitted: "
                                                       f"{exc.reason}") from None
        if offset != source.offset or source.header not in (None, header):
            raise InvalidInput(f"input {source.name}", "changed since the job was submitted: "
                                                       f"its header was {source.header}, is "
                                                       f"{header}")
        dtype = np.dtype(header[0])
        f.seek(offset + start * header[2] * dtype.itemsize)
        data = f.read((stop - start) * header[2] * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(-1, header[2]).astype(np.float64)


def _parquet_rows(real: Path, start: int, stop: int, model: ModelInfo) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(real).read_row_groups(range(start, stop),
                                                 columns=list(model.feature_names))
    return np.column_stack([table.column(name).to_numpy().astype(np.float64)
                            for name in model.feature_names])


def _typed_parquet_rows(real: Path, start: int, stop: int, model: ModelInfo, name: str
                        ) -> Batch:
    import pyarrow.parquet as pq

    source = pq.ParquetFile(real)
    present = typedread.check_header(source.schema_arrow.names, model.schema, 1 << 20,
                                     strict=False)
    table = source.read_row_groups(range(start, stop), columns=present)
    bounds = Bounds(max(1, table.num_rows), 1 << 62)
    try:
        parts = list(typedread.tables(table.to_batches(), model.schema, bounds))
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.field} of row groups {start}-{stop - 1} of {name}",
                           exc.reason) from None
    return parts[0] if len(parts) == 1 else typedread.concat(parts)


def _csv_rows(real: Path, source: Source, start: int, stop: int, model: ModelInfo
              ) -> np.ndarray:
    """The lines that start in [start, stop): a line begun before `start` belongs to the
    chunk before; the last line is read past `stop` to its end. No line is read past the
    model's line bound (a range is at most refs.CHUNK_BYTES): a file of one endless line costs
    a worker that bound, not the file."""
    limit = line_limit(model)
    with open(real, "rb") as f:
        begin = start
        if start > source.offset:
            f.seek(start - 1)
            begun = _line(f, limit, start - 1, source)  # the end of the line begun before
            begin = start - 1 + len(begun)
        if begin >= stop:
            return np.empty((0, model.n_features))
        f.seek(begin)
        data = f.read(stop - begin)
        if data and not data.endswith(b"\n"):
            data += _line(f, limit, stop, source)
    header = (",".join(source.columns) + "\n").encode()
    bounds = Bounds(max(1, data.count(b"\n") + 1), 1 << 62)
    read = formats.CSV.reader(model.plain)
    try:
        parts = list(read(io.BytesIO(header + data), model, bounds))
    except InvalidInput as exc:
        if exc.reason == "the body has no rows":
            return np.empty((0, model.n_features))
        raise InvalidInput(f"{exc.field} of the lines in bytes {begin}-{stop} of "
                           f"{source.name}", exc.reason) from None
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if model.plain else typedread.concat(parts)


def _line(f: BinaryIO, limit: int, at: int, source: Source) -> bytes:
    """The rest of the line at `at`, at most `limit` bytes (its end, or the file's)."""
    rest = f.readline(limit + 2)
    if len(rest) > limit and not rest.endswith(b"\n"):
        raise InvalidInput(f"the line at byte {at:,} of {source.name}",
                           f"longer than {limit:,} bytes: a row for this model may take at "
                           f"most {limit:,}")
    return rest
