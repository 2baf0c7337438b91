"""JSON rows against a typed schema: every wrong value answers with its row, column and the
expected type; strings are bounded; categories pass unless the column is closed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from service.core.errors import InvalidInput
from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.models.schema import Column, ColumnType, InputSchema

SCHEMA = InputSchema((
    Column("plan", ColumnType.STRING, categories=("basic", "pro")),
    Column("age", ColumnType.NUMBER, nullable=True),
    Column("seats", ColumnType.INTEGER),
    Column("annual", ColumnType.BOOLEAN),
    Column("signup", ColumnType.DATETIME, nullable=True),
), frame=True, ignored=("id",))
BOUNDS = TypedBounds(max_rows=100, max_string=20, max_distinct=3)
ROW = {"plan": "pro", "age": 41, "seats": 3, "annual": True, "signup": "2024-05-01T10:00:00Z"}


def _error(inputs: Any, schema: InputSchema = SCHEMA, bounds: TypedBounds = BOUNDS
           ) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_typed_rows(inputs, schema, bounds)
    return caught.value


def test_objects_and_lists_make_the_same_typed_batch() -> None:
    as_list = [list(ROW.values())]
    first = parse_typed_rows([ROW], SCHEMA, BOUNDS)
    assert first.equals(parse_typed_rows(as_list, SCHEMA, BOUNDS))
    assert first.schema.types == [pa.string(), pa.float64(), pa.int64(), pa.bool_(),
                                  pa.timestamp("us", tz="UTC")]
    assert first.to_pylist()[0]["signup"] == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)


def test_datetimes_take_offsets_dates_and_naive_values_as_utc() -> None:
    rows = [{**ROW, "signup": text} for text in
            ("2024-05-01T12:00:00+02:00", "2024-05-01", "2024-05-01 10:00:00")]
    got = parse_typed_rows(rows, SCHEMA, BOUNDS).column("signup").to_pylist()
    assert got == [dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC),
                   dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
                   dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)]


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("plan", 3, "expected a string, got number"),
    ("age", "41", "expected a number, got string"),
    ("age", True, "expected a number, got boolean"),
    ("seats", 2.5, "expected an integer, got a number with a fraction"),
    ("seats", 2**70, "expected an integer within 64 bits"),
    ("annual", 1, "expected a boolean, got number"),
    ("signup", 1714557600, "expected an ISO-8601 date or datetime string, got number"),
    ("signup", "yesterday", "expected an ISO-8601 date or datetime, got 'yesterday'"),
    ("plan", None, "expected a string, got null (column 'plan' may not be missing)"),
    ("plan", ["pro"], "expected a string, got array"),
])
def test_wrong_value_names_row_column_and_expected_type(column: str, value: Any,
                                                        reason: str) -> None:
    error = _error([ROW, {**ROW, column: value}])
    assert (error.field, error.reason) == (f"inputs[1].{column}", reason)


def test_wrong_value_in_a_list_row_names_its_position() -> None:
    error = _error([["pro", "x", 3, True, None]])
    assert (error.field, error.reason) == ("inputs[0][1]", "expected a number, got string")


def test_integral_float_is_an_integer_and_nan_is_refused() -> None:
    assert parse_typed_rows([{**ROW, "seats": 3.0}], SCHEMA, BOUNDS).column(
        "seats").to_pylist() == [3]
    assert "finite" in _error([{**ROW, "age": float("nan")}]).reason


def test_missing_nullable_key_is_null_missing_required_key_is_an_error() -> None:
    row = {k: v for k, v in ROW.items() if k not in ("age", "signup")}
    batch = parse_typed_rows([row], SCHEMA, BOUNDS)
    assert batch.column("age").null_count == 1 and batch.column("signup").null_count == 1
    row.pop("seats")
    assert _error([row]).field == "inputs[0].seats"


def test_ignored_column_is_accepted_and_dropped_unknown_column_is_refused() -> None:
    batch = parse_typed_rows([{**ROW, "id": 7}], SCHEMA, BOUNDS)
    assert batch.schema.names == SCHEMA.names
    assert "unknown column 'nope'" in _error([{**ROW, "nope": 1}]).reason


def test_unknown_category_passes_unless_the_column_is_closed() -> None:
    assert parse_typed_rows([{**ROW, "plan": "team"}], SCHEMA, BOUNDS).column(
        "plan").to_pylist() == ["team"]
    closed = InputSchema((Column("plan", ColumnType.STRING, categories=("basic", "pro"),
                                 closed=True),), frame=True)
    error = _error([["pro"], ["team"]], closed)
    assert error.field == "inputs[1][0]"
    assert error.reason == "unknown category 'team' of a closed column; known: 'basic', 'pro'"


def test_strings_are_bounded_in_length_and_distinct_values() -> None:
    assert "a string of 21 characters; at most 20" in _error([{**ROW, "plan": "x" * 21}]).reason
    rows = [{**ROW, "plan": f"p{i}"} for i in range(4)]
    error = _error(rows)
    assert error.field == "inputs[3].plan" and "more than 3 distinct values" in error.reason
    parse_typed_rows([{**ROW, "plan": "same"}] * 50, SCHEMA, BOUNDS)  # repeats are free


@pytest.mark.parametrize(("inputs", "reason"), [
    ({"plan": "pro"}, "must be a list of rows"),
    ([], "must contain at least one row"),
    ([ROW] * 101, "101 rows; at most 100 per job"),
    (["pro"], "must be a list of values or an object keyed by column name"),
    ([["pro", 1]], "has 2 values; the model takes 5 columns"),
])
def test_malformed_inputs_are_refused(inputs: Any, reason: str) -> None:
    assert reason in _error(inputs).reason


def test_bulk_lines_are_named_as_rows_from_one() -> None:
    error = _error_named([ROW, {**ROW, "seats": "3"}])
    assert error.field == "row 2.seats"


def _error_named(inputs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_typed_rows(inputs, SCHEMA, BOUNDS, row_name=lambda r: f"row {r + 1}")
    return caught.value
