"""The cache key of a typed row: the same row hashes alike however it arrived; any change of
value, type or missing-ness changes it; numeric rows keep the key they had before types."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pyarrow as pa

from service.jobs.cache import cache_key
from service.jobs.rowkey import row_digest
from service.jobs.typedcolumns import conform
from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.models.registry import ModelInfo
from service.models.schema import Column, ColumnType, InputSchema

SCHEMA = InputSchema((
    Column("plan", ColumnType.STRING, nullable=True),
    Column("note", ColumnType.STRING, nullable=True),
    Column("seats", ColumnType.INTEGER),
    Column("annual", ColumnType.BOOLEAN),
    Column("signup", ColumnType.DATETIME, nullable=True),
), frame=True)
BOUNDS = TypedBounds(max_rows=10)
ROW = {"plan": "pro", "note": "", "seats": 3, "annual": True, "signup": "2024-05-01T12:00:00+02:00"}


def _digest(**changes: object) -> str:
    return row_digest(parse_typed_rows([{**ROW, **changes}], SCHEMA, BOUNDS), SCHEMA)


def test_same_row_as_object_list_or_arrow_columns_hashes_alike() -> None:
    as_list = parse_typed_rows([list(ROW.values())], SCHEMA, BOUNDS)
    table = pa.table({"plan": pa.array(["pro"]).dictionary_encode(), "note": [""],
                      "seats": pa.array([3], pa.int8()), "annual": [True],
                      "signup": ["2024-05-01T10:00:00Z"]})
    from_arrow = conform(table, SCHEMA, BOUNDS)
    assert _digest() == row_digest(as_list, SCHEMA) == row_digest(from_arrow, SCHEMA)


def test_any_change_of_a_value_changes_the_digest() -> None:
    digests = {_digest(), _digest(plan="team"), _digest(plan=None), _digest(note=None),
               _digest(plan="pron", note=""), _digest(plan="pro", note="n"),
               _digest(seats=4), _digest(annual=False), _digest(signup=None),
               _digest(signup="2024-05-01T10:00:01Z")}
    assert len(digests) == 10


def test_numeric_rows_keep_the_key_they_had_before_types() -> None:
    info = ModelInfo(id=7, name="m", version="1", kind="regressor", n_features=2,
                     feature_names=["a", "b"], labels=None, sha256="ab" * 32,
                     artifact_path="/nowhere", sklearn_version=None)
    numbers = InputSchema.numbers(["a", "b"])
    row = np.array([[1.5, 2.0]])
    batch = parse_typed_rows([[1.5, 2]], numbers, BOUNDS)
    before_types = hashlib.blake2b(row[0].astype("<f8").tobytes(), digest_size=16).hexdigest()
    expected = f"predq:cache:{info.id}:{info.sha256}:{before_types}"
    assert cache_key(info, row) == expected
    assert cache_key(replace(info, input_schema=numbers), batch) == expected
