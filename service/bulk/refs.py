"""Bulk jobs by reference: the input is a file under the operator's data root (in the
tenant's own directory, or a prefix shared with it: `areas`), named in the submit, not
uploaded. The API reads only the file's header (a .npy header, Parquet's footer, a
CSV's first line) and plans the chunks; each worker reads its own (`refread`).

A chunk is a row range of a .npy array, a run of whole Parquet row groups (merged up to the
chunk size; a row group larger than that is one chunk: Parquet cannot read part of one cheaply),
or a byte range of a CSV that owns every line starting inside it (the first worker reading it
skips the partial line it starts in). A CSV's rows are estimated at submit from the length of
its first lines (for the job limit and the quota) and counted exactly as its chunks are read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from service.bulk import areas, formats, typedread
from service.bulk.areas import Area
from service.bulk.lines import line_limit
from service.bulk.parsing import Bounds, csv_header, npy_shape
from service.core.errors import InvalidInput
from service.jobs.chunkstore import Reference
from service.models.registry import ModelInfo

INPUTS = (formats.NPY, formats.PARQUET, formats.CSV)
CSV_SAMPLE = 1 << 16  # bytes after the header read to estimate a CSV's row length
CHUNK_BYTES = 32 << 20  # the most float64 input one chunk by reference holds, and the most
#                         bytes of a CSV one chunk's range spans (a worker reads a range whole)
#: The largest Parquet row group a job by reference may have, decoded: a worker reads a chunk's
#: row groups whole (a 10M-row group would be gigabytes in one worker).
MAX_ROW_GROUP_BYTES = 256 << 20


@dataclass(frozen=True)
class Source:
    """An input file as the workers read it: where (relative to the data root), inside which
    directory its real location must stay (relative to the root; "" is the whole root, as for
    jobs stored before tenants had directories), the name its errors show, and how to read it."""

    path: str
    format: str
    offset: int = 0  # .npy: the first data byte; CSV: the first byte after the header
    columns: list[str] = field(default_factory=list)  # CSV: the header, in file order
    base: str = ""
    shown: str = ""  # "": the path
    header: list[Any] | None = None  # .npy: [dtype, rows, columns] as planned

    def dumps(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items()
                           if v not in ("", None) or k in ("path", "format")})

    @classmethod
    def loads(cls, text: str) -> Source:
        return cls(**json.loads(text))

    @property
    def name(self) -> str:
        """The file as its submitter named it."""
        return self.shown or self.path

    def real(self, data_root: str) -> Path:
        """The file, checked again against its directory (a link swapped since the submit
        leads nowhere)."""
        return areas.recheck(data_root, self.path, self.base, self.name, "input",
                             writing=False)


def plan(area: Area, given: object, output: str | None, model: ModelInfo, bounds: Bounds
         ) -> Reference:
    """Check the input file against the model and cut it into chunks, reading its header
    only; `output` is the job's output target (`outputs.target`), if any."""
    located = area.input(given)
    fmt = formats.by_suffix(located.real)
    if fmt not in INPUTS:
        raise InvalidInput("input", f"must end in {formats.names(INPUTS)}")
    planner = {"npy": _npy, "parquet": _parquet, "csv": _csv}[fmt.name]
    source = Source(located.path, fmt.name, base=located.base,
                    shown="" if located.shown == located.path else located.shown)
    try:
        source, n_rows, ranges = planner(located.real, source, model, bounds)
    except OSError as exc:
        raise InvalidInput("input", f"{located.shown[:200]!r}: "
                                    f"{exc.strerror or 'cannot be read'}") from None
    if not 1 <= n_rows <= bounds.max_rows:
        raise InvalidInput("input", f"{n_rows} rows; between 1 and {bounds.max_rows} per job")
    return Reference(source.dumps(), output, n_rows, ranges)


def npy_header(f: BinaryIO, n_features: int) -> tuple[int, list[Any]]:
    """An open .npy file's data offset and [dtype, rows, columns], checked: a C-ordered 2-D
    numeric array of `n_features` columns, as long as its header says (read at submit, and
    again by every chunk's read: the file may have been replaced since)."""
    shape, dtype = npy_shape(f, "input")
    offset = f.tell()
    if len(shape) != 2 or shape[1] != n_features:
        raise InvalidInput("input", f"shape {shape}: the model needs (rows, {n_features})")
    if os.fstat(f.fileno()).st_size < offset + shape[0] * shape[1] * dtype.itemsize:
        raise InvalidInput("input", f"the file ends early: its header promises {shape[0]} rows")
    return offset, [dtype.str, int(shape[0]), int(shape[1])]


def _npy(real: Path, source: Source, model: ModelInfo, bounds: Bounds
         ) -> tuple[Source, int, list[tuple[int, int, int]]]:
    if not model.schema.numeric_only:
        raise InvalidInput("input", f"a .npy array holds numbers only; model {model.name} "
                                    "takes other types: use CSV or Parquet")
    with open(real, "rb") as f:
        offset, header = npy_header(f, model.n_features)
    n, step = header[1], bounds.chunk_rows
    ranges = [(min(step, n - a), a, min(a + step, n)) for a in range(0, n, step)]
    return dataclasses.replace(source, offset=offset, header=header), n, ranges


def _parquet(real: Path, source: Source, model: ModelInfo, bounds: Bounds
             ) -> tuple[Source, int, list[tuple[int, int, int]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from service.bulk.columnar import feature_fields

    try:
        meta = pq.ParquetFile(real).metadata
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).replace(str(real), source.name)
        raise InvalidInput("input", f"not a Parquet file: {reason}") from None
    columns = meta.schema.to_arrow_schema()
    if model.plain:
        feature_fields(columns, model)
    else:
        typedread.check_header(columns.names, model.schema, bounds.max_name, strict=False)
    ranges: list[tuple[int, int, int]] = []
    rows = first = 0
    for group in range(meta.num_row_groups):
        size = meta.row_group(group).num_rows
        decoded = size * _row_bytes(model)  # encoded sizes say little: a constant is tiny
        if decoded > MAX_ROW_GROUP_BYTES:
            most = MAX_ROW_GROUP_BYTES // _row_bytes(model)
            raise InvalidInput("input", f"row group {group} of {source.name} holds {size:,} "
                                        f"rows, about {decoded:,} bytes decoded; a worker reads a "
                                        f"row group whole: write row groups of at most {most:,} "
                                        "rows (pyarrow: row_group_size=...)")
        if rows and rows + size > bounds.chunk_rows:
            ranges.append((rows, first, group))
            rows, first = 0, group
        rows += size
    if rows:
        ranges.append((rows, first, meta.num_row_groups))
    return source, meta.num_rows, ranges


def _row_bytes(model: ModelInfo) -> int:
    """About what one row takes decoded: 8 bytes a number, 64 a string (Arrow's offsets and
    a short value)."""
    return sum(64 if c.type.value == "string" else 8 for c in model.schema.columns) or 8


def _csv(real: Path, source: Source, model: ModelInfo, bounds: Bounds
         ) -> tuple[Source, int, list[tuple[int, int, int]]]:
    limit = line_limit(model, bounds.max_name)
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
    if model.plain:
        names, _order = csv_header(header, model, bounds.max_name)
    else:
        names = [h.strip() for h in header]
        typedread.check_header(names, model.schema, bounds.max_name)
    offset = len(first)
    size = real.stat().st_size - offset
    lines = sample.count(b"\n") if len(sample) == CSV_SAMPLE else max(1, sample.count(b"\n"))
    if size <= 0 or not sample.strip():
        raise InvalidInput("input", "the CSV has no rows")
    line_bytes = len(sample) / max(1, lines) if lines else float(len(sample))
    estimate = max(1, round(size / line_bytes))
    step = max(1, min(CHUNK_BYTES, math.ceil(bounds.chunk_rows * line_bytes)))
    ranges = [(min(bounds.chunk_rows, max(1, round((min(a + step, size) - a) / line_bytes))),
               offset + a, offset + min(a + step, size)) for a in range(0, size, step)]
    return dataclasses.replace(source, offset=offset, columns=names), estimate, ranges
