"""A typed batch handed to the model as what it was fitted on: a pandas DataFrame with the
schema's dtypes (`schema.frame`), else a 2-D array.

A batch is a pyarrow RecordBatch with the schema's Arrow types, or, for an all-number schema,
a float64 matrix (NaN = missing), which an array model gets as it is (no copy).

Missing values are what pandas makes of them when it reads a file: NaN in float64 for numbers
and integers, NaN in an object column for strings and booleans (None where the model learnt
None as a category), NaT for datetimes. Strings are handed over in an object column (what
scikit-learn's encoders convert every string column to), or as a pandas Categorical with the
fitted categories, in their fitted order, where the model needs one (HistGradientBoosting's
`from_dtype`, LightGBM, XGBoost): a value outside them becomes missing there, as those models
treat unseen categories.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.models.schema import Column, ColumnType, InputSchema

Batch = Any  # pyarrow.RecordBatch | np.ndarray (float64, 2-D): pyarrow is imported lazily


def to_model_input(batch: Batch, schema: InputSchema) -> Any:
    """The model's input for this batch (see module doc)."""
    if isinstance(batch, np.ndarray):
        return _from_matrix(batch, schema)
    if schema.numeric_only and not schema.frame:
        return as_matrix(batch)
    if not schema.frame:
        return np.column_stack([_values(batch.column(i), c) for i, c in
                                enumerate(schema.columns)]).astype(object)
    import pandas as pd

    index = pd.RangeIndex(batch.num_rows)
    data = {}
    for i, c in enumerate(schema.columns):
        values = _series(batch.column(i), c, pd)
        if isinstance(values, np.ndarray) and values.dtype == object:
            # said outright: pandas 3 would infer its `str` dtype from an object array of
            # strings, a copy of every string that costs more than building the rest
            values = pd.Series(values, index=index, dtype=object, copy=False)
        data[c.name] = values
    return pd.DataFrame(data, index=index, copy=False)


def concat_batches(batches: list[Batch]) -> Batch:
    """Several jobs' batches as one, for one predict() call: float64 matrices stacked, record
    batches joined (string dictionaries unified; where some hold a column dictionary-encoded
    and others plain, plain)."""
    if all(isinstance(b, np.ndarray) for b in batches):
        return batches[0] if len(batches) == 1 else np.concatenate(batches)
    import pyarrow as pa

    if len(batches) == 1:
        return batches[0]
    if any(b.schema != batches[0].schema for b in batches):
        batches = [_plain_strings(b, pa) for b in batches]
    table = pa.Table.from_batches(batches).combine_chunks()
    return table.to_batches()[0] if table.num_rows else batches[0]


def _plain_strings(batch: Any, pa: Any) -> Any:
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    arrays = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c
              for c in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def as_matrix(batch: Batch) -> np.ndarray:
    """An all-number batch as a float64 matrix, NaN where a value is missing."""
    if isinstance(batch, np.ndarray):
        return batch
    if batch.num_columns == 1:
        return batch.column(0).to_numpy(zero_copy_only=False).astype(
            np.float64, copy=False).reshape(-1, 1)
    out = np.empty((batch.num_rows, batch.num_columns), dtype=np.float64)
    for j in range(batch.num_columns):
        out[:, j] = batch.column(j).to_numpy(zero_copy_only=False)
    return out


def _from_matrix(matrix: np.ndarray, schema: InputSchema) -> Any:
    if not schema.frame:
        return matrix
    import pandas as pd

    return pd.DataFrame(matrix, columns=schema.names, copy=False)


def _series(array: Any, column: Column, pd: Any) -> Any:
    values = _values(array, column)
    if column.dtype == "category" and column.categories is not None:
        known = pd.Index(list(column.categories))
        return pd.Categorical.from_codes(known.get_indexer(values), categories=known)
    if column.type is ColumnType.DATETIME:
        series = pd.Series(values)
        return _datetime_dtype(series, column.dtype)
    if column.type is not ColumnType.STRING and column.dtype is not None:
        return _numpy_dtype(values, column.dtype)
    return values  # strings in an object column: what every encoder converts them to


def _numpy_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """Numbers and booleans in the numpy dtype fitted on (int32, float32, ...); a pandas
    extension dtype (Int64, boolean) is given as the numpy form scikit-learn converts it to."""
    try:
        target = np.dtype(dtype)
    except TypeError:
        return values
    if target == values.dtype or values.dtype == object or (
            values.dtype.kind == "f" and target.kind in "iub"):
        return values  # missing values stay NaN in float64 rather than failing a cast
    return values.astype(target)


def _values(array: Any, column: Column) -> np.ndarray:
    """One column as numpy: float64 with NaN for numbers (and integers with nulls); int64;
    bool (object with NaN when missing); object strings (plain or dictionary-encoded) with NaN
    or None when missing; datetime64[us] in UTC."""
    if column.type is ColumnType.NUMBER:
        return array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    if column.type is ColumnType.INTEGER:
        if array.null_count:
            return array.cast("float64").to_numpy(zero_copy_only=False)
        return array.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if column.type is ColumnType.DATETIME:
        return array.to_numpy(zero_copy_only=False)
    if column.type is ColumnType.STRING:
        return _strings(array, column)
    values = array.to_numpy(zero_copy_only=False)
    if column.type is ColumnType.BOOLEAN and not array.null_count:
        return values.astype(bool, copy=False)
    if array.null_count and column.na != "none":
        values = values.astype(object, copy=True)
        values[array.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return values.astype(object, copy=False)


def _strings(array: Any, column: Column) -> np.ndarray:
    """Through a dictionary: each distinct string becomes one Python object, shared by the
    rows that hold it (10,000 rows of a few plans cost a few objects, not 10,000)."""
    import pyarrow as pa

    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    words = array.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
    missing = None if column.na == "none" else np.nan
    words = np.append(words, np.array([missing], dtype=object))
    codes = array.indices.fill_null(len(words) - 1).to_numpy(zero_copy_only=False)
    return words[codes]


def _datetime_dtype(series: Any, dtype: str | None) -> Any:
    """Datetimes as fitted: tz-aware UTC by default; a naive dtype gets UTC wall-clock time."""
    import pandas as pd

    aware = series.dt.tz_localize("UTC") if series.dt.tz is None else series
    if dtype is None or not dtype.startswith("datetime64"):
        return aware
    target = pd.api.types.pandas_dtype(dtype)
    if getattr(target, "tz", None) is None:
        return aware.dt.tz_convert(None).astype(target)
    return aware.dt.tz_convert(target.tz).astype(target)
