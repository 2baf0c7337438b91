"""Typed outputs: a classifier's labels kept as they are (strings, booleans, integers) from
predict() to every result format, probabilities one column per label.

What the result writers (`service.bulk.results`) take from here: `result_columns` for Parquet
and Arrow (a `prediction` column of the labels' own Arrow type, then `p_<label>`), `csv_cell`
for CSV (booleans as true/false, the spelling CSV input takes), `npy_dtype` for .npy (None for
labels that are not numbers: answer 406 naming the formats that work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.models.estimators import type_of_values
from service.models.schema import Column, ColumnType, arrow_type, clean_category


def labels_of(classes: Sequence[Any]) -> list[Any]:
    """A fitted classifier's `classes_` as plain JSON values (numpy scalars unwrapped)."""
    return [clean_category(c) for c in classes]


def label_type(labels: Sequence[Any] | None) -> ColumnType:
    """The type of a model's predictions: its labels' (a regressor's: number)."""
    if labels is None:
        return ColumnType.NUMBER
    return type_of_values(list(labels)) or ColumnType.STRING


def probability_names(labels: Sequence[Any]) -> list[str]:
    """`p_<label>` per label, in probability order; made unique where two labels print alike
    (True and "True")."""
    names: list[str] = []
    for label in labels:
        name = f"p_{label}"
        while name in names:
            name += "_"
        names.append(name)
    return names


def result_columns(chunk: dict[str, Any], labels: Sequence[Any] | None) -> dict[str, Any]:
    """A result chunk as Arrow arrays: `prediction` typed as the labels are (float64 for a
    regressor), then one float64 column per label."""
    import pyarrow as pa

    kind = arrow_type(Column("prediction", label_type(labels)))
    predictions = chunk["predictions"]
    values = predictions.tolist() if isinstance(predictions, np.ndarray) else predictions
    columns: dict[str, Any] = {"prediction": pa.array(values, type=kind)}
    probabilities = chunk.get("probabilities")
    if probabilities is not None and labels is not None:
        matrix = np.asarray(probabilities, dtype=np.float64)
        for j, name in enumerate(probability_names(labels)):
            columns[name] = pa.array(matrix[:, j])
    return columns


def csv_cell(value: Any) -> Any:
    """A prediction as a CSV cell: booleans as true/false, everything else as it prints."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return value


def npy_dtype(labels: Sequence[Any] | None) -> np.dtype[Any] | None:
    """The .npy dtype of the predictions: float64 for a regressor, int64 or float64 for number
    labels; None when labels are strings or booleans (.npy is for numbers)."""
    kind = label_type(labels)
    if kind is ColumnType.NUMBER:
        return np.dtype("<f8")
    if kind is ColumnType.INTEGER:
        return np.dtype("<i8")
    return None
