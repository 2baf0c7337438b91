"""Bulk input: a CSV, NDJSON or .npy body read as a stream and cut into fixed-size chunks of
float64 rows, each row checked against the model signature (Parquet and Arrow: `columnar`).
The first bad row stops the upload with its number; nothing of the body is held beyond one
chunk, and no line beyond the bound `lines.line_limit` derives from the model's width."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from service.bulk import csvfast
from service.bulk.lines import Lines, LineTooLong, line_limit
from service.core.errors import InvalidInput
from service.jobs.inputs import row_of
from service.models.modelinput import Batch
from service.models.registry import ModelInfo


@dataclass(frozen=True)
class Bounds:
    """How a body is cut and how much of it is accepted."""

    chunk_rows: int  # rows per chunk: one message and one commit each
    max_rows: int  # rows per job
    max_name: int = 1000  # characters of a column or feature name (or a typed string value)
    max_distinct: int = 10_000  # distinct strings per column of a typed model in one chunk


Reader = Callable[[IO[bytes], ModelInfo, Bounds], Iterator[Batch]]


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
            raise too_many(bounds.max_rows)
        batch.append(row)
        if len(batch) == bounds.chunk_rows:
            yield np.array(batch, dtype=np.float64)
            batch = []
    if batch:
        yield np.array(batch, dtype=np.float64)
    if count == 0:
        raise InvalidInput("inputs", "the body has no rows")


def too_many(max_rows: int) -> InvalidInput:
    return InvalidInput("inputs", f"more than {max_rows} rows; at most {max_rows} per job")


def csv_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds) -> Iterator[np.ndarray]:
    """CSV with a header of feature names (any order): blocks of lines parsed in C
    (`csvfast`); from the first block that path leaves, the rest row by row, which names the
    first bad row."""
    limit = line_limit(model)
    first = stream.readline(limit + 2)
    try:
        header = next(csv.reader([first.decode("utf-8")]))
        names, order = csv_header(header, model, bounds.max_name)
    except (UnicodeDecodeError, csv.Error, StopIteration, InvalidInput):
        header = []
    if not first.endswith(b"\n") or first.count(b'"') % 2 or not header:
        yield from _csv_slow(Joined(first, stream), model, bounds)  # it says what is wrong
        return
    number = lines = 0
    held: list[np.ndarray] = []
    source = csvfast.blocks(stream, limit)
    for block in source:
        matrix = csvfast.parse(block, names, order, limit)
        if matrix is None:  # the row-by-row reader from this block on
            if held:
                yield np.concatenate(held)
            rest = Joined(first + block, _Rest(source))
            yield from _csv_slow(rest, model, bounds, number, lines)
            return
        number += len(matrix)
        lines += csvfast.lines_in(block)
        if number > bounds.max_rows:
            raise too_many(bounds.max_rows)
        held.append(matrix)
        while sum(len(m) for m in held) >= bounds.chunk_rows:
            joined = np.concatenate(held)
            yield joined[:bounds.chunk_rows]
            held = [joined[bounds.chunk_rows:]]
    if held and sum(len(m) for m in held):
        yield np.concatenate(held)
    if number == 0:
        raise InvalidInput("inputs", "the body has no rows")


class Joined(io.RawIOBase):
    """`head`, then the stream: a body handed on after part of it was read."""

    def __init__(self, head: bytes, stream: IO[bytes] | io.RawIOBase) -> None:
        super().__init__()
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._stream.read(len(buffer)) or b""
        buffer[:len(data)] = data
        return len(data)


class _Rest(io.RawIOBase):
    """What a block iterator has not given yet, as a stream."""

    def __init__(self, source: Iterator[bytes]) -> None:
        super().__init__()
        self._source = source
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = next(self._source, b"")
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n


def _csv_slow(raw: IO[bytes] | io.RawIOBase, model: ModelInfo, bounds: Bounds,
              rows_before: int = 0, lines_before: int = 0) -> Iterator[np.ndarray]:
    """Row by row, converted a chunk at a time by numpy (in C); only a chunk that fails is
    looked at value by value, to name its first bad row. Rows and lines are numbered after
    `rows_before` and `lines_before` (the header not counted) read by the fast path."""
    chunk_rows, max_rows, max_name = bounds.chunk_rows, bounds.max_rows, bounds.max_name
    stream: Any = raw if isinstance(raw, io.BufferedIOBase) else io.BufferedReader(raw)  # type: ignore[arg-type]
    at = lines_before
    text = Lines(io.TextIOWrapper(stream, encoding="utf-8", newline=""), line_limit(model))
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("inputs", "the CSV is empty: a header row of feature names comes "
                                     "first") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput("header", f"not a CSV header: {exc}") from None
    except LineTooLong:
        raise InvalidInput("header", f"line 1: {text.reason(model)}") from None
    text.held = 0
    names, order = csv_header(header, model, max_name)
    width = len(names)
    batch: list[list[str]] = []
    lines: list[int] = []
    number = rows_before
    try:
        for fields in reader:
            text.held = 0  # a row ends here: the bound is on each row
            if not fields:
                continue  # blank line
            number += 1
            if len(fields) != width:
                raise bad_row(number, f"line {reader.line_num + at}: {len(fields)} fields; the "
                                      f"header has {width}")
            if number > max_rows:
                raise too_many(max_rows)
            batch.append(fields)
            lines.append(reader.line_num + at)
            if len(batch) == chunk_rows:
                yield _csv_matrix(batch, lines, number - len(batch) + 1, names, order)
                batch, lines = [], []
    except UnicodeDecodeError as exc:
        raise bad_row(number + 1, f"not UTF-8: {exc.reason}") from None
    except csv.Error as exc:
        raise bad_row(number + 1, f"line {reader.line_num + at}: {exc}") from None
    except LineTooLong:
        raise bad_row(number + 1, f"line {reader.line_num + at + 1}: {text.reason(model)}"
                      ) from None
    if batch:
        yield _csv_matrix(batch, lines, number - len(batch) + 1, names, order)
    if number == 0:
        raise InvalidInput("inputs", "the body has no rows")


def csv_header(header: list[str], model: ModelInfo, max_name: int) -> tuple[list[str], list[int]]:
    """A CSV header's column names, checked against the model's features (any order), and
    where each feature's column is."""
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
    return names, [names.index(n) for n in model.feature_names]


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
    for number, line_number, line in ndjson_lines(stream, model, line_limit(model)):
        yield _ndjson_row(line, number, line_number, model, index, max_name)


def ndjson_lines(stream: IO[bytes], model: ModelInfo, limit: int
                 ) -> Iterator[tuple[int, int, bytes]]:
    """The non-blank lines of an NDJSON body, each with its row number (from 1) and line
    number; a line past `limit` bytes is refused naming it, before it is held."""
    lines = Lines(stream, limit)
    number = line_number = 0
    try:
        for line_number, line in enumerate(lines, 1):
            lines.held = 0
            if not line.strip():
                continue
            number += 1
            yield number, line_number, line
    except LineTooLong:
        raise bad_row(number + 1, f"line {line_number + 1}: {lines.reason(model, 'bytes')}"
                      ) from None


def _ndjson_row(line: bytes, number: int, line_number: int, model: ModelInfo,
                index: dict[str, int], max_name: int) -> list[float]:
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError,
        # and an integer of more than 4,300 digits
        raise bad_row(number, f"line {line_number}: not a JSON value: {str(exc)[:200]}"
                      ) from None
    try:
        return row_of(raw, number - 1, model, index, max_name)
    except InvalidInput as exc:
        where = exc.field.split("]", 1)[-1] if exc.field else ""
        raise bad_row(number, f"line {line_number}: "
                              f"{where.lstrip('.') + ': ' if where else ''}{exc.reason}") from None


def npy_chunks(stream: IO[bytes], model: ModelInfo, bounds: Bounds,
               nullable: list[bool] | None = None) -> Iterator[np.ndarray]:
    """A 2-D numeric .npy array of (rows, features), read a chunk at a time; NaN is a
    missing value, allowed only in the `nullable` columns (none by default)."""
    chunk_rows, max_rows = bounds.chunk_rows, bounds.max_rows
    shape, dtype = npy_shape(stream, "inputs")
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
        data = read_exactly(stream, take * row_bytes)
        if len(data) < take * row_bytes:
            raise bad_row(done + len(data) // row_bytes + 1,
                          f"the body ends early: the header promised {shape[0]} rows")
        matrix = np.frombuffer(data, dtype=dtype).reshape(take, shape[1]).astype(np.float64)
        finite = valid_rows(matrix, nullable)
        if not finite.all():
            raise bad_row(done + int(np.argmin(finite)) + 1, "must hold finite numbers only"
                          + (" (NaN where a column may be missing)" if nullable else ""))
        done += take
        yield matrix


def npy_shape(stream: IO[bytes], field: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """A .npy stream's shape and dtype from its header, which must describe a C-ordered
    numeric array; the stream is left at the first row. Errors name `field`."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
    except (ValueError, EOFError) as exc:
        raise InvalidInput(field, f"not a .npy array: {exc}") from None
    if dtype.hasobject or dtype.kind not in "fiub" or fortran:
        raise InvalidInput(field, f"a C-ordered numeric array, not {dtype}"
                                  f"{' (Fortran order)' if fortran else ''}")
    return shape, dtype


def valid_rows(matrix: np.ndarray, nullable: list[bool] | None) -> np.ndarray:
    """Per row: every value finite, or NaN in a column that may be missing."""
    finite = np.isfinite(matrix)
    if nullable is not None and any(nullable):
        finite |= np.isnan(matrix) & np.asarray(nullable)
    return finite.all(axis=1)  # type: ignore[no-any-return]


def read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
