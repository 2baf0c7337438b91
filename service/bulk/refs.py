"""Bulk jobs by reference: the input is a file under the operator's data root, named in the
submit, not uploaded. The API reads only the file's header (a .npy header, Parquet's footer, a
CSV's first line) and plans the chunks; each worker reads its own (`refread`).

A chunk is a row range of a .npy array, a run of whole Parquet row groups (merged up to the
chunk size; a row group larger than that is one chunk: Parquet cannot read part of one cheaply),
or a byte range of a CSV that owns every line starting inside it (the first worker reading it
skips the partial line it starts in). A CSV's rows are estimated at submit from the length of
its first lines (for the job limit and the quota) and counted exactly as its chunks are read.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from service.bulk import formats
from service.bulk.lines import line_limit
from service.bulk.parsing import Bounds, csv_header
from service.core.errors import InvalidInput
from service.jobs.chunks import Reference
from service.models.registry import ModelInfo

INPUTS = (formats.NPY, formats.PARQUET, formats.CSV)
CSV_SAMPLE = 1 << 16  # bytes after the header read to estimate a CSV's row length
CHUNK_BYTES = 32 << 20  # the most float64 input one chunk by reference holds


@dataclass(frozen=True)
class Source:
    """An input file as the workers read it: where (relative to the data root) and how."""

    path: str
    format: str
    offset: int = 0  # .npy: the first data byte; CSV: the first byte after the header
    columns: list[str] = field(default_factory=list)  # CSV: the header, in file order

    def dumps(self) -> str:
        return json.dumps({"path": self.path, "format": self.format, "offset": self.offset,
                           "columns": self.columns})

    @classmethod
    def loads(cls, text: str) -> Source:
        return cls(**json.loads(text))


def root_of(data_root: str, field_name: str) -> Path:
    if not data_root:
        raise InvalidInput(field_name, "this server has no data root (PREDQ_DATA_ROOT): jobs "
                                       "by reference are off; upload the rows instead")
    return Path(data_root).resolve()


def resolve(data_root: str, given: object, field_name: str, exists: bool = True) -> Path:
    """`given` as a real path inside the data root, or InvalidInput naming why not: `..`, an
    absolute path elsewhere, a symlink leading out, a missing file."""
    root = root_of(data_root, field_name)
    if not isinstance(given, str) or not given.strip() or "\x00" in given:
        raise InvalidInput(field_name, "a path relative to the data root, e.g. in/rows.npy")
    if ".." in PurePosixPath(given).parts or ".." in Path(given).parts:
        raise InvalidInput(field_name, f"{given[:200]!r}: '..' is not allowed; name a file "
                                       "under the data root")
    path = Path(given)
    if path.is_absolute() and not _inside(Path(os.path.normpath(path)), root):
        raise InvalidInput(field_name, f"{given[:200]!r} is an absolute path outside the data "
                                       "root; name the file relative to the data root")
    real = (root / path).resolve()
    if not _inside(real, root):
        raise InvalidInput(field_name, f"{given[:200]!r} leads outside the data root (through "
                                       "a symbolic link)")
    if exists and not real.is_file():
        raise InvalidInput(field_name, f"{given[:200]!r}: no such file under the data root")
    if not exists and real.is_dir():
        raise InvalidInput(field_name, f"{given[:200]!r} is a directory")
    return real


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def output_of(data_root: str, given: object) -> str:
    """Where a job's result goes, relative to the data root; its suffix says the format."""
    real = resolve(data_root, given, "output", exists=False)
    fmt = formats.by_suffix(real)
    if fmt is None or fmt.write is None:
        raise InvalidInput("output", f"must end in {formats.names(formats.WRITABLE)}")
    return real.relative_to(root_of(data_root, "output")).as_posix()


def plan(data_root: str, given: object, output: object, model: ModelInfo, bounds: Bounds
         ) -> Reference:
    """Check the input file against the model and cut it into chunks, reading its header
    only."""
    real = resolve(data_root, given, "input")
    relative = real.relative_to(root_of(data_root, "input")).as_posix()
    fmt = formats.by_suffix(real)
    if fmt not in INPUTS:
        raise InvalidInput("input", f"must end in {formats.names(INPUTS)}")
    planner = {"npy": _npy, "parquet": _parquet, "csv": _csv}[fmt.name]
    source, n_rows, ranges = planner(real, relative, model, bounds)
    if not 1 <= n_rows <= bounds.max_rows:
        raise InvalidInput("input", f"{n_rows} rows; between 1 and {bounds.max_rows} per job")
    out = None if output is None else output_of(data_root, output)
    return Reference(source.dumps(), out, n_rows, ranges)


def _npy(real: Path, relative: str, model: ModelInfo, bounds: Bounds
         ) -> tuple[Source, int, list[tuple[int, int, int]]]:
    fmt = np.lib.format
    with open(real, "rb") as f:
        try:
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
                fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except (ValueError, EOFError) as exc:
            raise InvalidInput("input", f"not a .npy array: {exc}") from None
        offset = f.tell()
    if dtype.hasobject or dtype.kind not in "fiub" or fortran:
        raise InvalidInput("input", f"a C-ordered numeric array, not {dtype}"
                                    f"{' (Fortran order)' if fortran else ''}")
    if len(shape) != 2 or shape[1] != model.n_features:
        raise InvalidInput("input", f"shape {shape}: model {model.name} needs "
                                    f"(rows, {model.n_features})")
    if real.stat().st_size < offset + shape[0] * shape[1] * dtype.itemsize:
        raise InvalidInput("input", f"the file ends early: its header promises {shape[0]} rows")
    n, step = shape[0], bounds.chunk_rows
    ranges = [(min(step, n - a), a, min(a + step, n)) for a in range(0, n, step)]
    return Source(relative, "npy", offset), n, ranges


def _parquet(real: Path, relative: str, model: ModelInfo, bounds: Bounds
             ) -> tuple[Source, int, list[tuple[int, int, int]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from service.bulk.columnar import feature_fields

    try:
        meta = pq.ParquetFile(real).metadata
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput("input", f"not a Parquet file: {exc}") from None
    feature_fields(meta.schema.to_arrow_schema(), model)
    ranges: list[tuple[int, int, int]] = []
    rows = first = 0
    for group in range(meta.num_row_groups):
        size = meta.row_group(group).num_rows
        if rows and rows + size > bounds.chunk_rows:
            ranges.append((rows, first, group))
            rows, first = 0, group
        rows += size
    if rows:
        ranges.append((rows, first, meta.num_row_groups))
    return Source(relative, "parquet"), meta.num_rows, ranges


def _csv(real: Path, relative: str, model: ModelInfo, bounds: Bounds
         ) -> tuple[Source, int, list[tuple[int, int, int]]]:
    limit = line_limit(model)
    with open(real, "rb") as f:
        first = f.readline(limit + 2)
        if not first.endswith(b"\n"):
            raise InvalidInput("header", "line 1: no end of line within "
                                         f"{limit} bytes: a header of feature names comes first")
        sample = f.read(CSV_SAMPLE)
    try:
        header = next(csv.reader(io.StringIO(first.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise InvalidInput("header", f"not a CSV header: {exc}") from None
    names, _order = csv_header(header, model, bounds.max_name)
    offset = len(first)
    size = real.stat().st_size - offset
    lines = sample.count(b"\n") if len(sample) == CSV_SAMPLE else max(1, sample.count(b"\n"))
    if size <= 0 or not sample.strip():
        raise InvalidInput("input", "the CSV has no rows")
    line_bytes = len(sample) / max(1, lines) if lines else float(len(sample))
    estimate = max(1, round(size / line_bytes))
    step = max(1, math.ceil(bounds.chunk_rows * line_bytes))
    ranges = [(min(bounds.chunk_rows, max(1, round((min(a + step, size) - a) / line_bytes))),
               offset + a, offset + min(a + step, size)) for a in range(0, size, step)]
    return Source(relative, "csv", offset, names), estimate, ranges
