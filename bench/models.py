"""Benchmark and demo models: training and joblib artifacts."""

from __future__ import annotations

import os
from typing import Any

import joblib
from sklearn.datasets import load_diabetes, load_iris, make_classification, make_regression
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge

N_FEATURES = 20
RANDOM_STATE = 0
TYPED = "churn"  # the typed pipeline's name in write_models


def make_models(n_samples: int = 5000) -> dict[str, Any]:
    """Train the two 20-feature benchmark models.

    Returns {"lr": LogisticRegression, "rf": RandomForestRegressor}.
    """
    xc, yc = make_classification(
        n_samples=n_samples, n_features=N_FEATURES, n_informative=10, random_state=RANDOM_STATE
    )
    lr = LogisticRegression(max_iter=1000).fit(xc, yc)
    xr, yr = make_regression(
        n_samples=n_samples, n_features=N_FEATURES, noise=0.1, random_state=RANDOM_STATE
    )
    rf = RandomForestRegressor(
        n_estimators=50, max_depth=8, random_state=RANDOM_STATE, n_jobs=1
    ).fit(xr, yr)
    return {"lr": lr, "rf": rf}


def make_heavy_rf(n_samples: int = 1000) -> RandomForestRegressor:
    """The heavier RandomForest of the mixed-load scenarios: 300 trees of depth 8, six times
    the cost per row of `rf` (a bulk job of it lasts long enough to measure beside it).

    Fitted on both cores from 1,000 samples (2 s, not 14): the trees still reach depth 8, so a
    row costs the same to predict; predicting uses one thread (n_jobs=1), as a worker does."""
    x, y = make_regression(
        n_samples=n_samples, n_features=N_FEATURES, noise=0.1, random_state=RANDOM_STATE
    )
    rf = RandomForestRegressor(
        n_estimators=300, max_depth=8, random_state=RANDOM_STATE, n_jobs=-1
    ).fit(x, y)
    rf.n_jobs = 1
    return rf


def make_demo_models() -> dict[str, Any]:
    """Train the demo models.

    Returns {"iris": LogisticRegression (4 features), "diabetes": Ridge (10 features)}.
    """
    iris = load_iris()
    diabetes = load_diabetes()
    return {
        "iris": LogisticRegression(max_iter=1000).fit(iris.data, iris.target),
        "diabetes": Ridge(alpha=1.0).fit(diabetes.data, diabetes.target),
    }


def make_typed_model(n_samples: int = 5000) -> Any:
    """The typed pipeline of the `typed` scenarios: predq's `churn` demo (one-hot `plan` and
    `country`, imputed and scaled `age` (nullable) and three integer columns, a boolean
    passed through, then LogisticRegression), fitted on a pandas DataFrame."""
    from service.models.demo_typed import churn_frame, churn_pipeline

    frame, label = churn_frame(n_samples, RANDOM_STATE)
    return churn_pipeline().fit(frame, label)


def example_of(name: str) -> Any:
    """The input example to register model `name` with (None: its inputs are inferred); the
    typed pipeline's pins `seats` as integer and `annual` as boolean."""
    if name != TYPED:
        return None
    from service.models.demo_typed import churn_frame

    return churn_frame(20, RANDOM_STATE)[0]


def n_features_of(model: Any) -> int:
    """Number of input features the fitted estimator expects."""
    return int(model.n_features_in_)


def write_models(directory: str, names: list[str] | None = None) -> dict[str, str]:
    """Train all (or the named) models and joblib.dump each to DIR/NAME.joblib; `rf300`
    (make_heavy_rf) and `churn` (make_typed_model) only when named.

    Returns {name: path}.
    """
    os.makedirs(directory, exist_ok=True)
    wanted = set(names) if names is not None else None
    models: dict[str, Any] = {}
    if wanted is None or wanted & {"lr", "rf"}:
        models.update(make_models())
    if wanted is None or wanted & {"iris", "diabetes"}:
        models.update(make_demo_models())
    if wanted is not None and "rf300" in wanted:  # only when asked: it takes 2 s to fit
        models["rf300"] = make_heavy_rf()
    if wanted is not None and TYPED in wanted:  # only when asked: it needs pandas
        models[TYPED] = make_typed_model()
    paths: dict[str, str] = {}
    for name, model in models.items():
        if wanted is not None and name not in wanted:
            continue
        path = os.path.join(directory, f"{name}.joblib")
        joblib.dump(model, path)
        paths[name] = path
    return paths
