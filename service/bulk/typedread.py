"""Bulk input for typed models (strings, booleans, dates, missing values): every format read
into Arrow record batches of the model's schema, cut into chunks like the numeric readers'.

CSV is read a block at a time by pyarrow with every column as text (an empty cell is
missing), then each block is cast and checked by `typedcolumns.conform`, which names the first
bad row and column; NDJSON lines are checked as JSON rows are (`typedrows`); Parquet and Arrow
batches are conformed as they come. Nothing of the body is held beyond a chunk (and a CSV
block of at most `BLOCK` bytes). A model of plain numbers never comes here: its fast readers
parse straight into float64 (`parsing`, `columnar`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from service.bulk.lines import line_limit
from service.bulk.parsing import Bounds, bad_row, ndjson_lines, npy_chunks, too_many
from service.core.errors import InvalidInput
from service.jobs.typedcolumns import conform
from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.models.modelinput import Batch
from service.models.registry import ModelInfo
from service.models.schema import InputSchema

#: Bytes pyarrow's CSV reader takes at a time (a row may not be longer).
BLOCK = 1 << 20


def typed_bounds(bounds: Bounds) -> TypedBounds:
    return TypedBounds(bounds.chunk_rows, bounds.max_name, bounds.max_distinct, bounds.max_name)


def check_header(names: list[str], schema: InputSchema, max_name: int, strict: bool = True
                 ) -> list[str]:
    """A body's column names against the schema: every column the model needs (a nullable
    one may be absent: all missing), none twice, and (`strict`, a CSV's header) none it does
    not know but those it drops. Returns the schema's columns present, to read."""
    known = set(schema.names) | set(schema.ignored)
    for name in names if strict else ():
        if len(name) > max_name or name not in known:
            raise InvalidInput("header", f"unknown column {name[:100]!r}; the model takes "
                                         f"{', '.join(schema.names)[:2000]}")
    if len(set(names)) != len(names):
        raise InvalidInput("header", "a column appears twice")
    missing = [c.name for c in schema.columns if c.name not in names and not c.nullable]
    if missing:
        raise InvalidInput("header", f"missing column {missing[0]!r}")
    return [name for name in schema.names if name in names]


def csv_batches(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[Batch]:
    """A CSV with a header row of column names (any order)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    limit = line_limit(model, bounds.max_name)
    first = stream.readline(limit + 2)
    names = _csv_header(first, limit)
    check_header(names, model.schema, bounds.max_name)
    read = pcsv.ReadOptions(column_names=names, use_threads=False)
    convert = pcsv.ConvertOptions(column_types={name: pa.string() for name in names},
                                  strings_can_be_null=True, quoted_strings_can_be_null=False)
    try:
        blocks = (pcsv.read_csv(pa.py_buffer(block), read_options=read,
                                convert_options=convert) for block in _blocks(stream, limit))
        yield from rechunk(_conformed(blocks, model.schema, bounds), bounds)
    except pa.ArrowInvalid as exc:
        raise InvalidInput("inputs", f"not a CSV this model can read: {_short(exc)}") from None


def _blocks(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """The body after its header about BLOCK bytes at a time, each ending where a line ends.

    Read here and handed to pyarrow as bytes: its streaming CSV reader reads a Python stream
    from an I/O thread of its own, and the API's request body (a gevent socket) may be read
    only from its hub's thread: the API's worker died of SIGSEGV on the first typed CSV."""
    while block := stream.read(BLOCK):
        if not block.endswith(b"\n"):
            rest = stream.readline(limit + 2)
            if len(rest) > limit and not rest.endswith(b"\n"):
                raise InvalidInput("inputs", f"a line longer than {limit:,} bytes: a row for "
                                             f"this model may take at most {limit:,}")
            block += rest
        yield block


def _csv_header(first: bytes, limit: int) -> list[str]:
    if not first.endswith(b"\n"):
        raise InvalidInput("header", f"line 1: no end of line within {limit} bytes: a header "
                                     "of column names comes first")
    try:
        return [h.strip() for h in next(csv.reader([first.decode("utf-8")]))]
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise InvalidInput("header", f"not a CSV header: {exc}") from None


def ndjson_batches(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[Batch]:
    """NDJSON: one row a line, an object keyed by column name or a list in schema order."""
    rows: list[Any] = []
    number = 0
    for number, line_number, line in ndjson_lines(stream, model,
                                                  line_limit(model, bounds.max_name)):
        if number > bounds.max_rows:
            raise too_many(bounds.max_rows)
        rows.append(_json(line, number, line_number))
        if len(rows) == bounds.chunk_rows:
            yield _rows(rows, number - len(rows), model.schema, bounds)
            rows = []
    if rows:
        yield _rows(rows, number - len(rows), model.schema, bounds)
    if number == 0:
        raise InvalidInput("inputs", "the body has no rows")


def _json(line: bytes, number: int, line_number: int) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise bad_row(number, f"line {line_number}: not a JSON value: {str(exc)[:200]}"
                      ) from None


def _rows(rows: list[Any], before: int, schema: InputSchema, bounds: Bounds) -> Batch:
    return parse_typed_rows(rows, schema, typed_bounds(bounds),
                            row_name=lambda r: f"row {before + r + 1}")


def npy_batches(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[Batch]:
    """A .npy array, for a model of numbers only (NaN where a column may be missing)."""
    schema = model.schema
    if not schema.numeric_only:
        raise InvalidInput("inputs", f"a .npy array holds numbers only; model {model.name} "
                                     "takes other types: send CSV, NDJSON, Parquet or Arrow")
    yield from npy_chunks(stream, model, bounds, [c.nullable for c in schema.columns])


def tables(batches: Iterable[Any], schema: InputSchema, bounds: Bounds) -> Iterator[Batch]:
    """Parquet or Arrow record batches, conformed and cut into chunks."""
    import pyarrow as pa

    yield from rechunk(_conformed((pa.Table.from_batches([b]) for b in batches), schema,
                                  bounds), bounds)


def _conformed(tables: Iterable[Any], schema: InputSchema, bounds: Bounds) -> Iterator[Batch]:
    """Each table (a CSV block, a record batch) cast and checked, its rows numbered after
    those before it; the rows counted against the job's bound."""
    done = 0
    limits = typed_bounds(bounds)
    for table in tables:
        for part in _slices(table, bounds.chunk_rows):
            if done + part.num_rows > bounds.max_rows:
                raise too_many(bounds.max_rows)
            batch = conform(part, schema, limits, first_row=done + 1)
            done += part.num_rows
            if part.num_rows:
                yield batch
    if done == 0:
        raise InvalidInput("inputs", "the body has no rows")


def _slices(table: Any, rows: int) -> Iterator[Any]:
    """A table in slices of at most `rows` rows (the bounds apply per chunk)."""
    for start in range(0, max(1, table.num_rows), rows):
        yield table.slice(start, rows)


def rechunk(batches: Iterable[Batch], bounds: Bounds) -> Iterator[Batch]:
    """Chunks of exactly `chunk_rows` rows (the last one fewer), whatever the batches' sizes."""
    import pyarrow as pa

    held: list[Any] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while count >= bounds.chunk_rows:
            table = pa.Table.from_batches(held).combine_chunks()
            yield table.slice(0, bounds.chunk_rows).to_batches()[0]
            rest = table.slice(bounds.chunk_rows)
            held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]


def concat(batches: list[Batch]) -> Batch:
    """Record batches as one."""
    import pyarrow as pa

    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
