"""LightGBM and XGBoost through their scikit-learn API, alone on a DataFrame with a category
column and inside pipelines: inferred, served as fitted, their library versions found."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from service.jobs.typedrows import TypedBounds, parse_typed_rows
from service.jobs.typedstore import decode_batch, encode_batch
from service.models.examples import schema_for
from service.models.libraries import libraries_of
from service.models.modelinput import to_model_input
from service.models.schema import ColumnType
from tests.support import typed

lightgbm = pytest.importorskip("lightgbm")
xgboost = pytest.importorskip("xgboost")


def _frame(n_rows: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    frame, label = typed.churn_frame(n_rows, seed=7)
    frame = frame[["plan", "country", "age", "seats", "annual"]].assign(
        plan=frame["plan"].astype("category"))
    return frame, (label == "churn").astype(int)


def _served(model: Any, frame: pd.DataFrame) -> Any:
    """The frame sent as JSON rows, stored, read back and handed over (registered with an
    example, which pins `annual` as boolean where the model reads a number)."""
    schema = schema_for(model, frame.head(10))
    batch = parse_typed_rows(typed.json_rows(frame), schema, TypedBounds(max_rows=10_000))
    stored = decode_batch(encode_batch(batch, schema), schema, batch.num_rows)
    return to_model_input(stored, schema)


def test_lightgbm_on_a_frame_with_a_category_column() -> None:
    frame, label = _frame()
    frame = frame.drop(columns="country")
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame, label)
    plan = schema_for(model).column("plan")
    assert (plan.type, plan.dtype) == (ColumnType.STRING, "category")
    assert plan.categories == tuple(frame["plan"].cat.categories)
    np.testing.assert_allclose(model.predict_proba(_served(model, frame)),
                               model.predict_proba(frame))
    assert libraries_of(model) == {"lightgbm": lightgbm.__version__}


def test_xgboost_on_a_frame_with_a_category_column() -> None:
    frame, label = _frame()
    frame = frame.drop(columns="country")
    model = xgboost.XGBClassifier(n_estimators=10, enable_categorical=True,
                                  tree_method="hist").fit(frame, label)
    schema = schema_for(model)
    plan = schema.column("plan")
    assert (plan.type, plan.dtype) == (ColumnType.STRING, "category")
    assert schema.column("annual").type is ColumnType.BOOLEAN
    assert schema.column("age").nullable
    np.testing.assert_allclose(model.predict_proba(_served(model, frame)),
                               model.predict_proba(frame))


@pytest.mark.parametrize("booster", ["lightgbm", "xgboost"])
def test_booster_inside_a_pipeline(booster: str) -> None:
    frame, label = _frame()
    frame = frame.astype({"plan": str})
    final = (lightgbm.LGBMClassifier(n_estimators=20, verbose=-1) if booster == "lightgbm"
             else xgboost.XGBClassifier(n_estimators=10))
    model = make_pipeline(make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["plan", "country"]),
        (SimpleImputer(), ["age"]), remainder="passthrough"), final).fit(frame, label)
    schema = schema_for(model)
    assert schema.column("country").categories == ("br", "de", "fr", "gb", "jp", "us")
    assert schema.column("seats").nullable  # passed through to a model that takes NaN
    np.testing.assert_allclose(model.predict_proba(_served(model, frame)),
                               model.predict_proba(frame))
    assert set(libraries_of(model)) == {booster}
