"""What a fitted estimator says about its input: the questions `inference` asks of each step
(is it a pipeline, an encoder, does it take NaN, which categories did it learn). scikit-learn
is imported lazily: the API imports the models package without needing it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service.models.schema import ColumnType, clean_category

ENCODERS = frozenset({"OneHotEncoder", "OrdinalEncoder", "TargetEncoder"})


@dataclass(frozen=True)
class Categories:
    """The values a step learnt for one column; `type` None when they do not tell it."""

    type: ColumnType | None
    values: tuple[Any, ...] | None
    dtype: str | None = None  # "category": the model needs a pandas Categorical
    na: str = "nan"  # "none": Python None was among them (a known missing value)


def _from(module: str, step: Any) -> bool:
    return type(step).__module__.split(".")[0] == module


def is_sklearn(step: Any) -> bool:
    return _from("sklearn", step)


def is_booster(step: Any) -> bool:
    """LightGBM's and XGBoost's scikit-learn API: models that read numbers and categories."""
    return _from("lightgbm", step) or _from("xgboost", step)


def is_drop(step: Any) -> bool:
    return isinstance(step, str) and step == "drop"


def is_identity(step: Any) -> bool:
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    return (is_sklearn(step) and type(step).__name__ == "FunctionTransformer"
            and getattr(step, "func", None) is None)


def is_composite(step: Any) -> bool:
    """A step that only routes columns to other steps (which then read them), or passes
    them on unread."""
    return is_identity(step) or is_drop(step) or is_pipeline(step) or is_column_transformer(
        step)


def reads_anything(step: Any) -> bool:
    """A step whose input type cannot be told: a function, or code not from scikit-learn,
    LightGBM or XGBoost."""
    if not is_sklearn(step):
        return not is_booster(step)
    return type(step).__name__ in {"FunctionTransformer", "DictVectorizer", "FeatureHasher"}


def is_text_vectorizer(step: Any) -> bool:
    """CountVectorizer, TfidfVectorizer, HashingVectorizer: one column of text."""
    return type(step).__module__.startswith("sklearn.feature_extraction.text")


def is_pipeline(step: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(step, Pipeline)


def is_column_transformer(step: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    return isinstance(step, ColumnTransformer)


def is_imputer(step: Any) -> bool:
    return type(step).__module__.startswith("sklearn.impute") and type(
        step).__name__.endswith("Imputer")


def is_encoder(step: Any) -> bool:
    return is_sklearn(step) and type(step).__name__ in ENCODERS


def one_to_one(step: Any) -> bool:
    """Output feature j is input feature j transformed (scalers): a column can be followed."""
    from sklearn.base import OneToOneFeatureMixin

    return isinstance(step, OneToOneFeatureMixin)


def allows_nan(step: Any) -> bool:
    """The step's own `allow_nan` tag (a Pipeline: its steps in turn)."""
    if is_identity(step):
        return True
    if is_pipeline(step):
        for _, inner in step.steps:
            if stops_nan(inner):
                return True
            if not allows_nan(inner):
                return False
        return True
    try:
        from sklearn.utils import get_tags
    except ImportError:  # scikit-learn < 1.6
        from sklearn.utils._tags import _safe_tags

        return bool(_safe_tags(step, "allow_nan"))
    try:
        return bool(get_tags(step).input_tags.allow_nan)
    except (AttributeError, TypeError, ValueError):
        return False


def stops_nan(step: Any) -> bool:
    """NaN in, no NaN out: an imputer, or an encoder that maps missing values to a code."""
    if is_imputer(step):
        return True
    if is_encoder(step):
        count = len(getattr(step, "categories_", []))
        return count > 0 and all(encoder_takes_nan(step, j, False) for j in range(count))
    return False


def imputes_strings(imputer: Any) -> bool:
    statistics = getattr(imputer, "statistics_", None)
    return statistics is not None and getattr(statistics, "dtype", None) is not None and (
        statistics.dtype.kind == "O" and any(isinstance(v, str) for v in statistics))


def encoder_takes_nan(encoder: Any, j: int, downstream_ok: bool) -> bool:
    """Does this encoder take a missing value in column j, and is what it makes of one taken
    by what follows (`downstream_ok`)? An OrdinalEncoder passes NaN on by default."""
    name = type(encoder).__name__
    if name == "TargetEncoder":
        return True  # missing is a category, unknown values get the target mean
    known = _knows_missing(encoder.categories_[j])
    unknown = getattr(encoder, "handle_unknown", "error")
    if name == "OneHotEncoder":
        return known or unknown != "error"
    if known:
        return downstream_ok or not _is_nan(getattr(encoder, "encoded_missing_value", math.nan))
    if unknown == "use_encoded_value":
        return downstream_ok or not _is_nan(getattr(encoder, "unknown_value", math.nan))
    return False


def categories_of(encoder: Any, j: int) -> Categories | None:
    learnt = getattr(encoder, "categories_", None)
    if learnt is None or j >= len(learnt):
        return None
    return classify(list(learnt[j]))


def classify(values: list[Any], dtype: str | None = None) -> Categories:
    """Learnt values as categories: their type, the missing markers set apart."""
    na = "none" if any(v is None for v in values) else "nan"
    cleaned = [c for c in (clean_category(v) for v in values) if c is not None]
    return Categories(type_of_values(cleaned), tuple(cleaned), dtype, na)


def type_of_values(values: list[Any]) -> ColumnType | None:
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return ColumnType.BOOLEAN
    if all(isinstance(v, str) for v in values):
        return ColumnType.STRING
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return ColumnType.INTEGER
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return ColumnType.NUMBER
    return None


def branches(ct: Any, width: int) -> list[tuple[str, Any, list[int] | None]]:
    """A fitted ColumnTransformer's branches (remainder included) with the input positions
    each read; None where a selector was not resolved at fit."""
    resolved = getattr(ct, "_transformer_to_input_indices", None) or {}
    names = [str(n) for n in getattr(ct, "feature_names_in_", [])]
    out: list[tuple[str, Any, list[int] | None]] = []
    for name, trans, columns in ct.transformers_:
        if name in resolved:
            out.append((name, trans, [int(i) for i in resolved[name]]))
        else:
            out.append((name, trans, _positions(columns, names, width)))
    return out


def _positions(columns: Any, names: list[str], width: int) -> list[int] | None:
    if callable(columns):
        return None
    if isinstance(columns, slice):
        return list(range(width))[columns]
    if isinstance(columns, str | int):
        columns = [columns]
    picked = list(columns)
    if picked and all(isinstance(c, bool) or type(c).__name__ == "bool_" for c in picked):
        return [i for i, keep in enumerate(picked) if keep]
    try:
        return [names.index(str(c)) if isinstance(c, str) else int(c) for c in picked]
    except ValueError:
        return None


def model_categories(model: Any, width: int) -> dict[int, Categories]:
    """The columns a model itself treats as categorical, by input position."""
    if is_sklearn(model) and hasattr(model, "is_categorical_"):
        return _hist_gradient_boosting(model)
    if _from("lightgbm", model):
        return _lightgbm(model)
    if _from("xgboost", model):
        return _xgboost(model)
    return {}


def _hist_gradient_boosting(model: Any) -> dict[int, Categories]:
    mask = model.is_categorical_
    if mask is None:
        return {}
    positions = [i for i, flag in enumerate(mask) if flag]
    dtype = "category" if model.categorical_features == "from_dtype" else None
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is None:  # categories given as integer codes
        return {i: Categories(ColumnType.INTEGER, None) for i in positions}
    encoder = preprocessor.named_transformers_.get("encoder")
    if encoder is None:
        return {i: Categories(None, None, dtype) for i in positions}
    return {i: classify(list(values), dtype)
            for i, values in zip(positions, encoder.categories_, strict=False)}


def _lightgbm(model: Any) -> dict[int, Categories]:
    booster = model.booster_
    infos = booster.dump_model(num_iteration=1).get("feature_infos", {})
    positions = [i for i, name in enumerate(booster.feature_name())
                 if infos.get(name, {}).get("values")]
    pandas = booster.pandas_categorical
    if not pandas or len(pandas) != len(positions):
        return {i: Categories(ColumnType.INTEGER, None) for i in positions}
    return {i: classify(list(values), "category")
            for i, values in zip(positions, pandas, strict=True)}


def _xgboost(model: Any) -> dict[int, Categories]:
    booster = model.get_booster()
    kinds = booster.feature_types or []
    try:
        found = dict(booster.get_categories(export_to_arrow=True).to_arrow())
    except (AttributeError, TypeError, ValueError):
        found = {}
    names = booster.feature_names or []
    out: dict[int, Categories] = {}
    for i, kind in enumerate(kinds):
        if kind == "c":
            values = found.get(names[i]) if i < len(names) else None
            out[i] = classify(values.to_pylist(), "category") if values is not None else (
                Categories(None, None, "category"))
        elif kind == "i":
            out[i] = Categories(ColumnType.BOOLEAN, None)
        elif kind == "int":
            out[i] = Categories(ColumnType.INTEGER, None)
    return out


def _knows_missing(values: Any) -> bool:
    return any(v is None or _is_nan(v) for v in values)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
