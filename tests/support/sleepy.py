"""A model that takes as long as its input asks: feature 0 is milliseconds to sleep (at most 10
s per batch). Importable by the worker processes, which unpickle the pipeline that uses it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def sleep_ms(x: np.ndarray) -> np.ndarray:
    time.sleep(min(10.0, max(0.0, float(np.max(x[:, 0]))) / 1000))
    return x


def train_sleepy(path: Path) -> Path:
    import joblib
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5, size=(50, 2))  # trained with sleeps of at most 5 ms
    model = make_pipeline(FunctionTransformer(sleep_ms), LinearRegression())
    model.fit(x, x @ [1.0, 2.0])
    joblib.dump(model, path)
    return path
