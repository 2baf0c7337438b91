"""A model version's predict cost per row, kept in SQL (`model_costs`): first measured at
registration on synthetic batches of its schema's values (`measure_at_registration`, a call's
fixed cost apart), then, after every chunk a worker predicts, moved towards what that chunk
took (`observe`: an exponentially weighted average, so a worker's CPU, contended or not, is
what counts). It sizes bulk chunks (service/jobs/chunksize.py)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from sqlalchemy import Connection, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.core.times import utcnow
from service.models.modelinput import to_model_input
from service.models.outputs import predict_outputs
from service.models.schema import Column, ColumnType, InputSchema, arrow_schema
from service.store.db import model_costs

#: Weight of the newest chunk in the average: a model whose cost changes (a worker's CPU
#: contended) is followed within a few chunks.
NEWEST = 0.3
SAMPLE_ROWS = 1000
LARGE_SECONDS = 0.1  # the second batch of the registration's measure takes about this


def observe(conn: Connection, model_id: int, seconds: float, rows: int) -> None:
    """Move the model's cost per row towards what `rows` took (a chunk just predicted)."""
    if rows < 1 or seconds <= 0:
        return
    per_row = seconds / rows
    changed = conn.execute(update(model_costs).where(model_costs.c.model_id == model_id).values(
        seconds_per_row=model_costs.c.seconds_per_row * (1 - NEWEST) + per_row * NEWEST,
        updated_at=utcnow())).rowcount
    if not changed:
        record(conn, model_id, per_row)


def record(conn: Connection, model_id: int, per_row: float) -> None:
    """Set the model's cost per row."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(model_costs).values(model_id=model_id, seconds_per_row=per_row,
                                      updated_at=utcnow())
    conn.execute(stmt.on_conflict_do_update(index_elements=[model_costs.c.model_id],
                                            set_={"seconds_per_row": per_row,
                                                  "updated_at": utcnow()}))


def measure_at_registration(model: Any, schema: InputSchema, classifier: bool) -> float | None:
    """Seconds per row of the model's outputs as workers compute them (`predict_outputs`:
    predict, and predict_proba for a classifier) on synthetic rows; None if the model refuses
    them (a worker's first chunk then measures it).

    The slope between two batches, each the best of three: SAMPLE_ROWS rows, then as many as
    take about LARGE_SECONDS. A call's fixed cost (a pipeline over a DataFrame spends about
    10 ms a call selecting columns and checking names and dtypes, whatever its rows) is not
    a row's: counted in, it made a typed pipeline's chunks 10-20 thousand rows instead of
    the hundred thousand a quarter of a second holds. A model whose first batch already
    takes LARGE_SECONDS / 2 is slow by the row: that batch's mean is its cost."""
    try:
        small = _best_of_three(model, schema, classifier, SAMPLE_ROWS)
        if small >= LARGE_SECONDS / 2:
            return small / SAMPLE_ROWS
        rows = min(20 * SAMPLE_ROWS, max(2 * SAMPLE_ROWS,
                                         int(SAMPLE_ROWS * LARGE_SECONDS / max(small, 1e-6))))
        large = _best_of_three(model, schema, classifier, rows)
    except Exception:  # noqa: BLE001 - an estimate only
        return None
    slope = (large - small) / (rows - SAMPLE_ROWS)
    return slope if slope > 0 else large / rows


def _best_of_three(model: Any, schema: InputSchema, classifier: bool, rows: int) -> float:
    given = to_model_input(synthetic(schema, rows), schema)
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        predict_outputs(model, given, classifier)
        best = min(best, time.perf_counter() - began)
    return best


def synthetic(schema: InputSchema, n: int) -> Any:
    """`n` rows of plausible values: a float64 matrix for numbers, else a record batch."""
    import numpy as np

    if schema.numeric_only:
        return np.full((n, len(schema.columns)), 0.5)
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array([_value(c)] * n, type=f.type)
                                       for c, f in zip(schema.columns, arrow_schema(schema),
                                                       strict=True)],
                                      schema=arrow_schema(schema))


def _value(column: Column) -> Any:
    if column.categories:
        return column.categories[0]
    return {ColumnType.NUMBER: 0.5, ColumnType.INTEGER: 1, ColumnType.BOOLEAN: False,
            ColumnType.STRING: "a",
            ColumnType.DATETIME: dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}[column.type]
