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


def n_features_of(model: Any) -> int:
    """Number of input features the fitted estimator expects."""
    return int(model.n_features_in_)


def write_models(directory: str, names: list[str] | None = None) -> dict[str, str]:
    """Train all (or the named) models and joblib.dump each to DIR/NAME.joblib.

    Returns {name: path}.
    """
    os.makedirs(directory, exist_ok=True)
    wanted = set(names) if names is not None else None
    models: dict[str, Any] = {}
    if wanted is None or wanted & {"lr", "rf"}:
        models.update(make_models())
    if wanted is None or wanted & {"iris", "diabetes"}:
        models.update(make_demo_models())
    paths: dict[str, str] = {}
    for name, model in models.items():
        if wanted is not None and name not in wanted:
            continue
        path = os.path.join(directory, f"{name}.joblib")
        joblib.dump(model, path)
        paths[name] = path
    return paths
