"""JSON rows checked against a model's typed input schema into one Arrow record batch.

A row is an object keyed by column name, or a list in schema order. Values: numbers (finite),
integers (a JSON number with no fraction), `true`/`false`, strings, ISO-8601 dates or datetimes
(a datetime without an offset is UTC), and `null` where the column may be missing (a missing
key of such a column is null too; of any other column, an error). A wrong value answers 400
naming row, column and the expected type. Strings are bounded in length, and in distinct values
per column per batch, so a hostile body cannot grow memory past its own size; a value outside a
column's known categories goes to the model unless the column is closed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.core.errors import InvalidInput
from service.models.schema import Column, ColumnType, InputSchema, arrow_type

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class TypedBounds:
    """How much typed input one batch may hold."""

    max_rows: int  # rows per job (JSON) or per chunk (bulk)
    max_string: int = 1000  # characters of one string value
    max_distinct: int = 10_000  # distinct strings of one column in one batch
    max_name: int = 1000  # characters of a key


def parse_typed_rows(inputs: Any, schema: InputSchema, bounds: TypedBounds,
                     row_name: Callable[[int], str] = "inputs[{}]".format) -> Any:
    """`inputs` (a JSON list of rows) as a pyarrow RecordBatch of the schema's Arrow types.
    Errors name row r as `row_name(r)` (NDJSON bulk lines: `"row {}".format` from 1)."""
    import pyarrow as pa

    if not isinstance(inputs, list):
        raise InvalidInput("inputs", "must be a list of rows")
    if not inputs:
        raise InvalidInput("inputs", "must contain at least one row")
    if len(inputs) > bounds.max_rows:
        raise InvalidInput("inputs", f"{len(inputs)} rows; at most {bounds.max_rows} per job")
    checks = [_Check(c, bounds) for c in schema.columns]
    index = {c.name: j for j, c in enumerate(schema.columns)}
    ignored = set(schema.ignored)
    for r, row in enumerate(inputs):
        where = row_name(r)
        if isinstance(row, dict):
            _object_row(row, where, checks, index, ignored, bounds.max_name)
        elif isinstance(row, list):
            _list_row(row, where, checks)
        else:
            raise InvalidInput(where, "must be a list of values or an object keyed by column "
                                      "name")
    arrays = [pa.array(check.values, type=arrow_type(check.column)) for check in checks]
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)


def _object_row(row: dict[str, Any], where: str, checks: list[_Check],
                index: dict[str, int], ignored: set[str], max_name: int) -> None:
    for key in row:
        if key not in index and key not in ignored:
            shown = key if len(key) <= max_name else key[:40] + "..."
            known = ", ".join(list(index)[:50])
            raise InvalidInput(where, f"unknown column {shown!r}; the model takes {known}")
    for name, j in index.items():
        check = checks[j]
        if name in row:
            check.add(row[name], f"{where}.{name}")
        elif check.column.nullable:
            check.values.append(None)
        else:
            raise InvalidInput(f"{where}.{name}", f"missing column {name!r}")


def _list_row(row: list[Any], where: str, checks: list[_Check]) -> None:
    if len(row) != len(checks):
        raise InvalidInput(where, f"has {len(row)} values; the model takes {len(checks)} "
                                  "columns")
    for j, (value, check) in enumerate(zip(row, checks, strict=True)):
        check.add(value, f"{where}[{j}]")


class _Check:
    """One column's values as they are checked and collected."""

    def __init__(self, column: Column, bounds: TypedBounds) -> None:
        self.column, self.bounds = column, bounds
        self.values: list[Any] = []
        self.convert: Callable[[Any, str], Any] = getattr(self, f"_{column.type.value}")
        self.known = (frozenset(column.categories)
                      if column.closed and column.categories is not None else None)
        self.seen: set[str] | None = set() if column.type is ColumnType.STRING else None

    def add(self, value: Any, where: str) -> None:
        if value is None:
            if not self.column.nullable:
                raise InvalidInput(where, f"expected {_EXPECTED[self.column.type]}, got null "
                                          f"(column {self.column.name!r} may not be missing)")
            self.values.append(None)
            return
        converted = self.convert(value, where)
        if self.known is not None and converted not in self.known:
            listed = ", ".join(repr(c) for c in list(self.column.categories or ())[:10])
            raise InvalidInput(where, f"unknown category {value!r} of a closed column; "
                                      f"known: {listed}")
        if self.seen is not None:
            self.seen.add(converted)
            if len(self.seen) > self.bounds.max_distinct:
                raise InvalidInput(where, f"more than {self.bounds.max_distinct} distinct "
                                          f"values of column {self.column.name!r} in one batch")
        self.values.append(converted)

    def _number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong(where, self.column, value)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise InvalidInput(where, "expected a finite number (NaN and Infinity are not "
                                      "allowed)")
        return number

    def _integer(self, value: Any, where: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(where, self.column, value)
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidInput(where, "expected an integer within 64 bits")
        return value

    def _boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise _wrong(where, self.column, value)
        return value

    def _string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise _wrong(where, self.column, value)
        if len(value) > self.bounds.max_string:
            raise InvalidInput(where, f"a string of {len(value)} characters; at most "
                                      f"{self.bounds.max_string}")
        return value

    def _datetime(self, value: Any, where: str) -> int:
        if not isinstance(value, str):
            raise _wrong(where, self.column, value)
        return parse_datetime(value, where)


def parse_datetime(text: str, where: str) -> int:
    """An ISO-8601 date or datetime as microseconds since the epoch, in UTC (a value without
    an offset is read as UTC)."""
    if len(text) > 64:
        raise InvalidInput(where, "expected an ISO-8601 date or datetime, got a long string")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(where, f"expected an ISO-8601 date or datetime, got {text!r}"
                           ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


_EXPECTED = {
    ColumnType.NUMBER: "a number",
    ColumnType.INTEGER: "an integer",
    ColumnType.BOOLEAN: "a boolean",
    ColumnType.STRING: "a string",
    ColumnType.DATETIME: "an ISO-8601 date or datetime string",
}


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a client wrote it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _wrong(where: str, column: Column, value: Any) -> InvalidInput:
    got = json_type(value)
    if column.type is ColumnType.INTEGER and got == "number":
        got = "a number with a fraction"
    return InvalidInput(where, f"expected {_EXPECTED[column.type]}, got {got}")
