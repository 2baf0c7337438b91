"""Arrow columns (what the Parquet, Arrow, CSV and NDJSON readers produce) against a typed
schema: cast to its types where the values allow, refused naming the first bad row."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from service.core.errors import InvalidInput
from service.jobs.typedcolumns import conform
from service.jobs.typedrows import TypedBounds
from service.models.schema import Column, ColumnType, InputSchema, arrow_schema

SCHEMA = InputSchema((
    Column("plan", ColumnType.STRING, categories=("basic", "pro")),
    Column("age", ColumnType.NUMBER, nullable=True),
    Column("seats", ColumnType.INTEGER),
    Column("annual", ColumnType.BOOLEAN),
    Column("signup", ColumnType.DATETIME, nullable=True),
), frame=True)
BOUNDS = TypedBounds(max_rows=1000, max_string=20, max_distinct=5)


def _table(**overrides: Any) -> pa.Table:
    columns: dict[str, Any] = {
        "plan": pa.array(["pro", "basic"]).dictionary_encode(),
        "age": pa.array([41, None], pa.int32()),
        "seats": pa.array([3.0, 4.0]),
        "annual": pa.array([True, False]),
        "signup": pa.array([dt.datetime(2024, 5, 1), None], pa.timestamp("ns")),
        "extra": pa.array(["ignored", "too"]),
    }
    columns.update(overrides)
    return pa.table(columns)


def _error(table: pa.Table, schema: InputSchema = SCHEMA) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        conform(table, schema, BOUNDS, first_row=11)
    return caught.value


def test_compatible_columns_are_cast_to_the_schema_types() -> None:
    batch = conform(_table(), SCHEMA, BOUNDS)
    assert batch.schema == arrow_schema(SCHEMA)
    assert batch.to_pylist()[0] == {"plan": "pro", "age": 41.0, "seats": 3, "annual": True,
                                    "signup": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)}


def test_csv_read_by_pyarrow_with_empty_cells_true_false_and_iso_dates() -> None:
    body = (b"plan,age,seats,annual,signup\npro,41,3,true,2024-05-01T12:00:00+02:00\n"
            b"basic,,4,false,\n")
    table = pacsv.read_csv(io.BytesIO(body))
    rows = conform(table, SCHEMA, BOUNDS).to_pylist()
    assert rows[0]["signup"] == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert rows[1]["age"] is None and rows[1]["annual"] is False


def test_mixed_iso_strings_are_parsed_one_by_one_and_a_bad_one_is_named() -> None:
    signup = pa.array(["2024-05-01T10:00:00Z", "2024-05-01"])
    assert conform(_table(signup=signup), SCHEMA, BOUNDS).column("signup").to_pylist() == [
        dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC), dt.datetime(2024, 5, 1, tzinfo=dt.UTC)]
    error = _error(_table(signup=pa.array(["2024-05-01T10:00:00Z", "soon"])))
    assert error.field == "row 12.signup"


@pytest.mark.parametrize(("overrides", "field", "reason"), [
    ({"plan": pa.array([1, 2])}, "header", "column 'plan' holds int64; expected string"),
    ({"seats": pa.array([3.0, 4.5])}, "row 12.seats", "expected integer values"),
    ({"age": pa.array([1.0, float("inf")])}, "row 12.age", "expected a finite number"),
    ({"seats": pa.array([3, None])}, "row 12.seats", "missing value; column 'seats' may not"),
    ({"plan": pa.array(["pro", "x" * 21])}, "row 12.plan", "a string of 21 characters"),
])
def test_bad_column_is_refused_naming_the_first_bad_row(overrides: dict[str, Any], field: str,
                                                        reason: str) -> None:
    error = _error(_table(**overrides))
    assert error.field == field and reason in error.reason


def test_missing_required_column_is_refused_missing_nullable_one_is_all_null() -> None:
    assert _error(_table().drop_columns(["seats"])).reason == "missing column 'seats'"
    batch = conform(_table().drop_columns(["age"]), SCHEMA, BOUNDS)
    assert batch.column("age").null_count == 2


def test_nan_is_missing_in_a_number_column() -> None:
    strict = InputSchema((Column("age", ColumnType.NUMBER),), frame=True)
    assert "missing value" in _error(pa.table({"age": [1.0, float("nan")]}), strict).reason


def test_closed_column_refuses_unknown_categories_open_one_passes_them() -> None:
    table = _table(plan=pa.array(["pro", "team"]))
    assert conform(table, SCHEMA, BOUNDS).column("plan").to_pylist() == ["pro", "team"]
    closed = InputSchema((Column("plan", ColumnType.STRING, categories=("basic", "pro"),
                                 closed=True),), frame=True)
    error = _error(table, closed)
    assert error.field == "row 12.plan" and "'team'" in error.reason


def test_distinct_strings_per_chunk_are_bounded() -> None:
    table = _table(plan=pa.array([f"p{i}" for i in range(6)]), age=pa.nulls(6, pa.float64()),
                   seats=pa.array(range(6)), annual=pa.array([True] * 6),
                   signup=pa.nulls(6, pa.timestamp("us")), extra=pa.nulls(6))
    assert "6 distinct values in one chunk; at most 5" in _error(table).reason


def test_duplicate_column_is_refused() -> None:
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["age", "age"])
    only_age = InputSchema((Column("age", ColumnType.NUMBER),), frame=True)
    assert _error(table, only_age).reason == "column 'age' appears twice"
