"""The typed demo model: a churn classifier as data teams ship them, a scikit-learn Pipeline
fitted on a pandas DataFrame of strings, a nullable number, integers and a boolean. The data is
generated here (no download), with a signal the model can learn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PLANS = ["basic", "pro", "team", "enterprise"]
COUNTRIES = ["de", "fr", "us", "gb", "jp", "br"]
FEATURES = ["plan", "country", "age", "seats", "monthly_spend", "support_tickets", "annual"]


def churn_frame(n_rows: int, seed: int = 0) -> tuple[Any, np.ndarray]:
    """`n_rows` synthetic customers and whether each churned ("churn" / "stay"); about one
    `age` in ten is missing."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, n_rows, p=[0.4, 0.3, 0.2, 0.1])
    country = rng.choice(COUNTRIES, n_rows)
    age = rng.integers(18, 80, n_rows).astype(np.float64)
    age[rng.random(n_rows) < 0.1] = np.nan
    seats = rng.integers(1, 200, n_rows)
    spend = np.round(rng.gamma(2.0, 40.0, n_rows) * (1 + seats / 50), 2)
    tickets = rng.poisson(1.5, n_rows)
    annual = rng.random(n_rows) < 0.35
    score = (0.9 * (plan == "basic") - 0.8 * annual + 0.35 * tickets - 0.004 * seats
             + 0.6 * (country == "br") - 0.01 * np.nan_to_num(age - 45, nan=0.0)
             + rng.normal(0, 0.8, n_rows))
    label = np.where(score > 0.6, "churn", "stay")
    frame = pd.DataFrame({"plan": plan, "country": country, "age": age, "seats": seats,
                          "monthly_spend": spend, "support_tickets": tickets,
                          "annual": annual})
    return frame[FEATURES], label


def churn_pipeline() -> Any:
    """The issue's pipeline: one-hot strings, imputed and scaled numbers, a logistic model."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["plan", "country"]),
            (make_pipeline(SimpleImputer(), StandardScaler()),
             ["age", "seats", "monthly_spend", "support_tickets"]),
            ("passthrough", ["annual"])),
        LogisticRegression(max_iter=1000))


def train_churn(path: str | Path, n_rows: int = 5000, seed: int = 0) -> tuple[Path, Any]:
    """Fit the churn pipeline, write it with joblib to `path`; return the path and a small
    input example (the first rows), which pins `annual` as boolean and `seats` as integer."""
    import joblib

    frame, label = churn_frame(n_rows, seed)
    model = churn_pipeline().fit(frame, label)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out)
    return out, frame.head(20)
