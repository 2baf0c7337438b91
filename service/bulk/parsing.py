"""Bulk input: a CSV, NDJSON, .npy or Parquet body read as a stream and cut into fixed-size
chunks of float64 rows, each row checked against the model signature. The first bad row stops
the upload with its number; nothing of the body is held beyond one chunk (Parquet keeps its
footer at the end, so its body is spooled to a temporary file first)."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from service.core.errors import InvalidInput
from service.jobs.inputs import row_of
from service.models.registry import ModelInfo


@dataclass(frozen=True)
class Bounds:
    """How a body is cut and how much of it is accepted."""

    chunk_rows: int  # rows per chunk: one message and one commit each
    max_rows: int  # rows per job
    max_name: int = 1000  # characters of a column or feature name


Reader = Callable[[IO[bytes], ModelInfo, Bounds], Iterator[np.ndarray]]


def bad_row(number: int, reason: str) -> InvalidInput:
    """Row numbers count data rows from 1 (a CSV header is not a row)."""
    return InvalidInput(f"row {number}", reason)


def ndjson_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """NDJSON: one row a line, a list of numbers or an object keyed by feature name."""
    batch: list[list[float]] = []
    count = 0
    for row in _ndjson_rows(stream, model, bounds.max_name):
        count += 1
        if count > bounds.max_rows:
            raise _too_many(bounds.max_rows)
        batch.append(row)
        if len(batch) == bounds.chunk_rows:
            yield np.array(batch, dtype=np.float64)
            batch = []
    if batch:
        yield np.array(batch, dtype=np.float64)
    if count == 0:
        raise InvalidInput("inputs", "the body has no rows")


def _too_many(max_rows: int) -> InvalidInput:
    return InvalidInput("inputs", f"more than {max_rows} rows; at most {max_rows} per job")


def csv_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """CSV with a header of feature names (any order), converted a chunk at a time by numpy
    (in C); only a chunk that fails is looked at row by row, to name its first bad row."""
    chunk_rows, max_rows, max_name = bounds.chunk_rows, bounds.max_rows, bounds.max_name
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("inputs", "the CSV is empty: a header row of feature names comes "
                                     "first") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput("header", f"not a CSV header: {exc}") from None
    names = [h.strip() for h in header]
    index = {name: i for i, name in enumerate(model.feature_names)}
    for name in names:
        if len(name) > max_name or name not in index:
            raise InvalidInput("header", f"unknown column {name[:100]!r}; model {model.name} "
                                         f"has {', '.join(model.feature_names)[:2000]}")
    missing = [n for n in model.feature_names if n not in names]
    if missing or len(set(names)) != len(names):
        raise InvalidInput("header", f"missing column {missing[0]!r}" if missing
                           else "a column appears twice")
    order = [names.index(n) for n in model.feature_names]
    width = len(names)
    batch: list[list[str]] = []
    lines: list[int] = []
    number = 0
    try:
        for fields in reader:
            if not fields:
                continue  # blank line
            number += 1
            if len(fields) != width:
                raise bad_row(number, f"line {reader.line_num}: {len(fields)} fields; the "
                                      f"header has {width}")
            if number > max_rows:
                raise _too_many(max_rows)
            batch.append(fields)
            lines.append(reader.line_num)
            if len(batch) == chunk_rows:
                yield _csv_matrix(batch, lines, number - len(batch) + 1, names, order)
                batch, lines = [], []
    except UnicodeDecodeError as exc:
        raise bad_row(number + 1, f"not UTF-8: {exc.reason}") from None
    except csv.Error as exc:
        raise bad_row(number + 1, f"line {reader.line_num}: {exc}") from None
    if batch:
        yield _csv_matrix(batch, lines, number - len(batch) + 1, names, order)
    if number == 0:
        raise InvalidInput("inputs", "the body has no rows")


def _csv_matrix(batch: list[list[str]], lines: list[int], first: int, names: list[str],
                order: list[int]) -> np.ndarray:
    try:
        matrix = np.array(batch, dtype=np.float64)
        if np.isfinite(matrix).all():
            return matrix[:, order]
    except ValueError:
        pass
    for i, fields in enumerate(batch):  # name the first bad value
        for column, text in enumerate(fields):
            _float(text, first + i, names[column], lines[i])
    raise bad_row(first, f"rows {first}-{first + len(batch) - 1} hold a value that is not a "
                         "number")  # numpy and float() agree, so this is not expected


def _float(text: str, number: int, column: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad_row(number, f"line {line}: column {column!r} is {text[:40]!r}, not a "
                              "number") from None
    if not math.isfinite(value):
        raise bad_row(number, f"line {line}: column {column!r} must be a finite number")
    return value


def _ndjson_rows(stream: IO[bytes], model: ModelInfo, max_name: int) -> Iterator[list[float]]:
    index = {name: i for i, name in enumerate(model.feature_names)}
    number = 0
    for line in stream:
        if not line.strip():
            continue
        number += 1
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError,
            # and an integer of more than 4,300 digits
            raise bad_row(number, f"not a JSON value: {str(exc)[:200]}") from None
        try:
            yield row_of(raw, number - 1, model, index, max_name)
        except InvalidInput as exc:
            where = exc.field.split("]", 1)[-1] if exc.field else ""
            raise bad_row(number, f"{where.lstrip('.') + ': ' if where else ''}{exc.reason}"
                          ) from None


def npy_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """A 2-D numeric .npy array of (rows, features), read a chunk at a time."""
    chunk_rows, max_rows = bounds.chunk_rows, bounds.max_rows
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
    except (ValueError, EOFError) as exc:
        raise InvalidInput("inputs", f"not a .npy array: {exc}") from None
    if dtype.hasobject or dtype.kind not in "fiub" or fortran:
        raise InvalidInput("inputs", f"a C-ordered numeric array, not {dtype} "
                                     f"{'(Fortran order)' if fortran else ''}".strip())
    if len(shape) != 2 or shape[1] != model.n_features:
        raise InvalidInput("inputs", f"shape {shape}: model {model.name} needs "
                                     f"(rows, {model.n_features})")
    if not 1 <= shape[0] <= max_rows:
        raise InvalidInput("inputs", f"shape {shape}: {shape[0]} rows; between 1 and "
                                     f"{max_rows} per job")
    row_bytes = dtype.itemsize * shape[1]
    done = 0
    while done < shape[0]:
        take = min(chunk_rows, shape[0] - done)
        data = _read_exactly(stream, take * row_bytes)
        if len(data) < take * row_bytes:
            raise bad_row(done + len(data) // row_bytes + 1,
                          f"the body ends early: the header promised {shape[0]} rows")
        matrix = np.frombuffer(data, dtype=dtype).reshape(take, shape[1]).astype(np.float64)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            raise bad_row(done + int(np.argmin(finite)) + 1, "must hold finite numbers only")
        done += take
        yield matrix


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def parquet_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """A Parquet file with a numeric column per feature (any order, extra columns ignored),
    read a record batch at a time (needs pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the format is offered only with pyarrow
        raise InvalidInput("inputs", "Parquet needs pyarrow on the server") from None
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
        done = 0
        for batch in source.iter_batches(batch_size=bounds.chunk_rows,
                                         columns=list(model.feature_names)):
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
            yield matrix

