"""Validate request inputs against a model's input schema; every error names the offending
field. A model whose inputs are plain numbers (`ModelInfo.plain`) takes the float64 fast path
below; a typed one (strings, booleans, dates, missing values) `typedrows`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.errors import InvalidInput
from service.core.settings import Settings
from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.models.modelinput import Batch
from service.models.registry import ModelInfo


@dataclass(frozen=True)
class InputBounds:
    """How much input one job (or one bulk chunk) may carry."""

    max_rows: int
    max_string: int = 1000  # characters of a key, or of a typed model's string value
    max_distinct: int = 10_000  # distinct strings per column of a typed model

    @classmethod
    def of(cls, settings: Settings, max_rows: int | None = None) -> InputBounds:
        """The settings' bounds for one JSON job (or `max_rows` rows, a bulk chunk)."""
        return cls(max_rows or settings.max_rows_per_job, settings.max_string_length,
                   settings.max_distinct_strings)


def parse_inputs(inputs: Any, model: ModelInfo, bounds: InputBounds) -> Batch:
    """`inputs` as the model's batch: a float64 matrix for a plain numeric model, else an
    Arrow record batch of the schema's types."""
    if model.plain:
        return parse_rows(inputs, model, bounds.max_rows, bounds.max_string)
    if model.numbers and isinstance(inputs, list) and 0 < len(inputs) <= bounds.max_rows:
        # An array-fitted model that takes NaN (a RandomForest, HistGradientBoosting): rows of
        # finite numbers need none of the typed checks, and are stored as float64 either way.
        fast = _fast_matrix(inputs, model.n_features)
        if fast is not None:
            return fast
    return parse_typed_rows(inputs, model.schema, TypedBounds(
        bounds.max_rows, bounds.max_string, bounds.max_distinct, bounds.max_string))


def parse_rows(inputs: Any, model: ModelInfo, max_rows: int, max_name: int = 1000
               ) -> np.ndarray:
    """Turn `inputs` (rows as lists, or objects keyed by feature name) into a float64 matrix.
    A key longer than `max_name` is refused before it is looked up or echoed."""
    if not isinstance(inputs, list):
        raise InvalidInput("inputs", "must be a list of rows")
    if not inputs:
        raise InvalidInput("inputs", "must contain at least one row")
    if len(inputs) > max_rows:
        raise InvalidInput("inputs", f"{len(inputs)} rows; at most {max_rows} per job")
    fast = _fast_matrix(inputs, model.n_features)
    if fast is not None:
        return fast
    index = {name: i for i, name in enumerate(model.feature_names)}
    return np.array([row_of(raw, r, model, index, max_name) for r, raw in enumerate(inputs)],
                    dtype=np.float64)


def _fast_matrix(inputs: list[Any], n_features: int) -> np.ndarray | None:
    """Rows of plain finite numbers, converted in C; None sends the caller to the exact checks
    that name the bad value."""
    number = (int, float)
    if not all(type(row) is list and len(row) == n_features for row in inputs):
        return None
    if not all(type(v) in number for row in inputs for v in row):
        return None  # strings and booleans (bool is not int here: type() is exact)
    try:
        matrix = np.array(inputs, dtype=np.float64)
    except (OverflowError, ValueError):
        return None
    if matrix.shape != (len(inputs), n_features) or not np.isfinite(matrix).all():
        return None
    return matrix


def row_of(raw: Any, r: int, model: ModelInfo, index: dict[str, int], max_name: int
         ) -> list[float]:
    where = f"inputs[{r}]"
    if isinstance(raw, list):
        if len(raw) != model.n_features:
            raise InvalidInput(
                where, f"has {len(raw)} features; model {model.name} expects {model.n_features}"
            )
        return [_number(v, f"{where}[{i}]") for i, v in enumerate(raw)]
    if isinstance(raw, dict):
        long = next((k for k in raw if len(k) > max_name), None)
        if long is not None:
            raise InvalidInput(where, f"a feature name of {len(long)} characters; "
                                      f"at most {max_name}")
        unknown = [k for k in raw if k not in index]
        if unknown:
            names = ", ".join(model.feature_names)
            raise InvalidInput(
                f"{where}.{unknown[0]}",
                f"unknown feature {unknown[0]!r}; model {model.name} has "
                + (names if len(names) <= 2000 else names[:2000] + "..."),
            )
        missing = [name for name in model.feature_names if name not in raw]
        if missing:
            raise InvalidInput(f"{where}.{missing[0]}", f"missing feature {missing[0]!r}")
        return [_number(raw[name], f"{where}.{name}") for name in model.feature_names]
    raise InvalidInput(where, "must be a list of numbers or an object keyed by feature name")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(where, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(where, "must be a finite number (NaN and Infinity are not allowed)")
    return number
