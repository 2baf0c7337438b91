"""Real typed models for the tests: scikit-learn pipelines (and LightGBM, XGBoost) fitted on
pandas DataFrames of strings, categories, booleans, datetimes and missing values; and the way
a client would send their rows (JSON values)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from service.models.demo_typed import churn_frame, churn_pipeline


def churn(n_rows: int = 800) -> tuple[Any, pd.DataFrame]:
    """The issue's pipeline, fitted; and its training frame."""
    frame, label = churn_frame(n_rows, seed=1)
    return churn_pipeline().fit(frame, label), frame


def hist_gradient_boosting(n_rows: int = 600) -> tuple[Any, pd.DataFrame]:
    """HistGradientBoosting with categorical_features="from_dtype" on a `category` column;
    NaN in a number column, taken natively."""
    frame, label = churn_frame(n_rows, seed=2)
    frame = frame[["plan", "age", "seats"]].assign(plan=frame["plan"].astype("category"))
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=20,
                                           random_state=0)
    return model.fit(frame, label), frame


def ordinal(n_rows: int = 600) -> tuple[Any, pd.DataFrame]:
    """An OrdinalEncoder branch (unknown values encoded -1), integers one-hot encoded, a bool
    column passed through, a dropped id column; a regressor."""
    frame, _ = churn_frame(n_rows, seed=3)
    frame = frame.assign(id=np.arange(n_rows), tickets=frame["support_tickets"])
    target = frame["monthly_spend"]
    frame = frame[["id", "country", "tickets", "annual"]]
    model = make_pipeline(
        make_column_transformer(
            (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["country"]),
            (OneHotEncoder(handle_unknown="ignore"), ["tickets"]),
            ("passthrough", ["annual"]),
            ("drop", ["id"])),
        LinearRegression())
    return model.fit(frame, target), frame


EPOCH = pd.Timestamp("2020-01-01")


def days_since_2020(frame: pd.DataFrame) -> pd.DataFrame:
    """A datetime column as days since 2020: what inference cannot see into."""
    return ((frame - EPOCH) / pd.Timedelta(days=1)).astype(float)


def dated(n_rows: int = 500) -> tuple[Any, pd.DataFrame]:
    """A naive datetime64[ns] column read by a FunctionTransformer: only an example types it."""
    frame, label = churn_frame(n_rows, seed=4)
    rng = np.random.default_rng(4)
    signup = EPOCH + pd.to_timedelta(rng.integers(0, 1500, n_rows), unit="D") + \
        pd.to_timedelta(rng.integers(0, 86400, n_rows), unit="s")
    frame = frame[["plan", "seats"]].assign(signup=pd.Series(signup).astype("datetime64[ns]"))
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["plan"]),
            (FunctionTransformer(days_since_2020), ["signup"]),
            (StandardScaler(), ["seats"])),
        LogisticRegression(max_iter=500))
    return model.fit(frame, label), frame


def array_model(n_rows: int = 200) -> tuple[Any, np.ndarray]:
    """A plain estimator fitted on a float64 array (as every model was before types)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n_rows, 3))
    return LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int)), x


def strict_strings(n_rows: int = 300) -> tuple[Any, pd.DataFrame]:
    """A OneHotEncoder that refuses unknown values, and imputed strings in another branch."""
    frame, label = churn_frame(n_rows, seed=6)
    frame = frame[["plan", "country"]].copy()
    frame.loc[frame.index[::7], "country"] = np.nan
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(), ["plan"]),
            (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()),
             ["country"])),
        LogisticRegression(max_iter=500))
    return model.fit(frame, label), frame


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as a client sends them: null for missing, ISO-8601 for datetimes."""
    return [{name: json_value(value) for name, value in row.items()}
            for row in frame.to_dict("records")]


def json_value(value: Any) -> Any:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value
