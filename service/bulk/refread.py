"""A worker's side of jobs by reference: read one chunk's rows from the input file (checked
against the data root again: a symlink swapped since the submit leads nowhere), and write the
result file once every chunk is done (a temporary file renamed: a reader never sees half)."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from service.bulk import download, formats
from service.bulk.parsing import Bounds, csv_chunks
from service.bulk.refs import Source, resolve
from service.core.errors import InvalidInput
from service.models.registry import ModelInfo


def read_chunk(data_root: str, source_text: str, start: int, stop: int, model: ModelInfo
               ) -> np.ndarray:
    """The chunk's rows as float64 in signature order, each row checked (finite numbers)."""
    source = Source.loads(source_text)
    real = resolve(data_root, source.path, "input")
    if source.format == "npy":
        matrix = np.asarray(np.load(real, mmap_mode="r")[start:stop], dtype=np.float64)
        where = "row {} of " + source.path
        first = start
    elif source.format == "parquet":
        matrix = _parquet_rows(real, start, stop, model)
        where = f"row {{}} of row groups {start}-{stop - 1} of {source.path}"
        first = 0
    else:
        return _csv_rows(real, source, start, stop, model)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise InvalidInput(where.format(first + int(np.argmin(finite)) + 1),
                           "must hold finite numbers only (no nulls)")
    return matrix


def _parquet_rows(real: Path, start: int, stop: int, model: ModelInfo) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(real).read_row_groups(range(start, stop),
                                                 columns=list(model.feature_names))
    return np.column_stack([table.column(name).to_numpy().astype(np.float64)
                            for name in model.feature_names])


def _csv_rows(real: Path, source: Source, start: int, stop: int, model: ModelInfo
              ) -> np.ndarray:
    """The lines that start in [start, stop): a line begun before `start` belongs to the
    chunk before; the last line is read past `stop` to its end."""
    with open(real, "rb") as f:
        begin = start
        if start > source.offset:
            f.seek(start - 1)
            begin = start - 1 + len(f.readline())  # to the end of the line begun before
        if begin >= stop:
            return np.empty((0, model.n_features))
        f.seek(begin)
        data = f.read(stop - begin)
        if data and not data.endswith(b"\n"):
            data += f.readline()
    header = (",".join(source.columns) + "\n").encode()
    bounds = Bounds(max(1, data.count(b"\n") + 1), 1 << 62)
    try:
        parts = list(csv_chunks(io.BytesIO(header + data), model, bounds))
    except InvalidInput as exc:
        if exc.reason == "the body has no rows":
            return np.empty((0, model.n_features))
        raise InvalidInput(f"{exc.field} of the lines in bytes {begin}-{stop} of "
                           f"{source.path}", exc.reason) from None
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def write_output(engine: Engine, data_root: str, job_id: str, output: str) -> Path:
    """Assemble the job's result chunks into `output` (under the data root) in the format its
    suffix names; concurrent writers each use a temporary file of their own."""
    target = resolve(data_root, output, "output", exists=False)
    fmt = formats.by_suffix(target)
    assert fmt is not None and fmt.write is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    resolve(data_root, output, "output", exists=False)  # no symlinked directory made meanwhile
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with open(partial, "wb") as out:
            for block in download.render_any(engine, job_id, fmt):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target
