"""An input example (MLflow's `input_example`): a few rows as the model was fitted on, which pin
what inference from the fitted estimator cannot (a datetime column read by a function, the
exact pandas dtypes); and `schema_for`, the one call registration makes.

Rules for an example's columns: bool -> boolean; integers -> integer; floats -> number;
datetime64 (any unit, naive or not) -> datetime; `category` -> the categories' type with those
categories; object or str columns of str -> string, of bool -> boolean, of datetimes ->
datetime. A column is nullable when it holds a missing value or has a nullable dtype (Int64,
boolean, string). A column mixing types, or of any other dtype, is refused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from service.core.errors import InvalidInput, ModelLoadError
from service.models import estimators
from service.models.inference import Inferred, infer, undetermined_error
from service.models.schema import Column, ColumnType, InputSchema

_REFINES = {  # inferred type -> example types that pin it further
    ColumnType.NUMBER: {ColumnType.NUMBER, ColumnType.INTEGER, ColumnType.BOOLEAN},
    ColumnType.INTEGER: {ColumnType.INTEGER},
    ColumnType.BOOLEAN: {ColumnType.BOOLEAN},
    ColumnType.STRING: {ColumnType.STRING},
    ColumnType.DATETIME: {ColumnType.DATETIME},
}
_KEEPS = {  # an example type the inferred one accepts without changing
    ColumnType.INTEGER: {ColumnType.NUMBER},
    ColumnType.BOOLEAN: {ColumnType.INTEGER, ColumnType.NUMBER},
}


def schema_for(estimator: Any, example: Any = None, closed: Iterable[str] = ()
               ) -> InputSchema:
    """The schema a model version is registered with: inferred, pinned by the example if one
    is given, `closed` columns refusing unknown categories. ModelLoadError when a column's
    type is known neither way (the message says to give an example)."""
    pinned = from_example(example) if example is not None else None
    return close(merge(infer(estimator), pinned), closed)


def read_example(path: str) -> Any:
    """An example file as a DataFrame: Parquet (types kept exactly), CSV (types as pandas
    reads them: use Parquet to pin an integer, a boolean or a date), or JSON (a list of row
    objects, or JSON Lines)."""
    import pandas as pd

    suffix = path.rsplit(".", 1)[-1].lower()
    try:
        if suffix == "parquet":
            return pd.read_parquet(path)
        if suffix == "csv":
            return pd.read_csv(path)
        if suffix in ("json", "jsonl", "ndjson"):
            return pd.read_json(path, orient="records", lines=suffix != "json")
    except (OSError, ValueError) as exc:
        raise InvalidInput("example", f"{path}: {str(exc)[:200]}") from None
    raise InvalidInput("example", "must end in .parquet, .csv, .json or .jsonl")


def from_example(example: Any) -> InputSchema:
    """The schema an example shows: a pandas DataFrame, a pyarrow Table, or rows (dicts)."""
    import pandas as pd

    frame = _frame(example, pd)
    if frame.empty or not len(frame.columns):
        raise InvalidInput("example", "must hold at least one row and one column")
    return InputSchema(tuple(_column(str(name), frame[name], pd)
                             for name in frame.columns), frame=True)


def merge(inferred: Inferred, example: InputSchema | None) -> InputSchema:
    """Inferred columns, pinned by the example where it says more (an integer or boolean for a
    number, the pandas dtype); the example alone types what inference could not. A conflict
    (strings in the example, numbers in the model) is refused."""
    if example is None:
        return inferred.schema()
    given = {c.name: c for c in example.columns}
    missing = {n: why for n, why in inferred.undetermined.items() if n not in given}
    if missing:
        raise undetermined_error(missing)
    columns = []
    for name in inferred.names:
        facts = inferred.facts[name]
        if not facts.used:
            continue
        pin = given.get(name)
        if facts.type is None:
            assert pin is not None
            columns.append(pin)
        else:
            columns.append(_pinned(facts.column(name), pin))
    return InputSchema(tuple(columns), inferred.frame, inferred.ignored)


def close(schema: InputSchema, names: Iterable[str]) -> InputSchema:
    """The schema with these columns closed: a value outside their categories is refused."""
    wanted = set(names)
    unknown = wanted - set(schema.names)
    if unknown:
        raise InvalidInput("closed", f"no column {sorted(unknown)[0]!r} in the model's inputs")
    columns = []
    for c in schema.columns:
        if c.name in wanted:
            if c.categories is None:
                raise InvalidInput("closed", f"column {c.name!r} has no known categories")
            c = Column(c.name, c.type, c.nullable, c.categories, True, c.dtype, c.na)
        columns.append(c)
    return InputSchema(tuple(columns), schema.frame, schema.ignored)


def _pinned(column: Column, pin: Column | None) -> Column:
    if pin is None:
        return column
    if pin.type in _KEEPS.get(column.type, set()):
        return column
    if pin.type not in _REFINES[column.type]:
        raise ModelLoadError(
            f"the example's column {column.name!r} holds {pin.type.value} values; the model "
            f"reads it as {column.type.value}")
    return Column(column.name, pin.type, column.nullable, column.categories, column.closed,
                  column.dtype or pin.dtype, column.na)


def _frame(example: Any, pd: Any) -> Any:
    if isinstance(example, pd.DataFrame):
        return example
    if hasattr(example, "to_pandas"):  # a pyarrow Table or RecordBatch
        return example.to_pandas()
    if isinstance(example, list) and all(isinstance(r, dict) for r in example):
        return pd.DataFrame.from_records(example)
    raise InvalidInput("example", "must be a DataFrame, an Arrow table or a list of objects")


def _column(name: str, series: Any, pd: Any) -> Column:
    dtype = series.dtype
    nulls = bool(series.isna().any())
    nullable = nulls or _nullable_dtype(dtype, pd)
    if isinstance(dtype, pd.CategoricalDtype):
        found = estimators.classify(list(dtype.categories))
        if found.type is None:
            raise InvalidInput(f"example.{name}", "a category column of mixed types")
        return Column(name, found.type, nullable, found.values, dtype="category")
    kind = _kind(name, series, pd)
    nones = pd.api.types.is_object_dtype(dtype) and any(v is None for v in series)
    return Column(name, kind, nullable, dtype=str(dtype), na="none" if nones else "nan")


def _kind(name: str, series: Any, pd: Any) -> ColumnType:
    api = pd.api.types
    dtype = series.dtype
    if api.is_bool_dtype(dtype):
        return ColumnType.BOOLEAN
    if api.is_integer_dtype(dtype):
        return ColumnType.INTEGER
    if api.is_float_dtype(dtype):
        return ColumnType.NUMBER
    if api.is_datetime64_any_dtype(dtype):
        return ColumnType.DATETIME
    if api.is_object_dtype(dtype) or api.is_string_dtype(dtype):
        values = [v for v in series if v is not None and not (isinstance(v, float) and v != v)]
        if values and all(isinstance(v, str) for v in values):
            return ColumnType.STRING
        if values and all(isinstance(v, bool) for v in values):
            return ColumnType.BOOLEAN
        if values and all(isinstance(v, dt.datetime) for v in values):
            return ColumnType.DATETIME
        kinds = sorted({type(v).__name__ for v in values})
        raise InvalidInput(f"example.{name}", "holds " + (" and ".join(kinds) or "no values")
                           + "; a column needs one type")
    raise InvalidInput(f"example.{name}", f"has dtype {dtype}; predq takes numbers, integers, "
                                          "booleans, strings and datetimes")


def _nullable_dtype(dtype: Any, pd: Any) -> bool:
    """pandas' nullable extension dtypes (Int64, boolean, string) say missing is expected."""
    return isinstance(dtype, pd.api.extensions.ExtensionDtype) and getattr(
        dtype, "na_value", None) is pd.NA
