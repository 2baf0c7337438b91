"""A model that takes as long as its input asks: feature 0 is milliseconds to sleep (at most 10
s per batch). Importable by the worker processes, which unpickle the pipeline that uses it."""

from __future__ import annotations

import time
from collections.abc import Callable
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


PER_ROW = 50e-6  # seconds


def sleep_per_row(x: np.ndarray) -> np.ndarray:
    """50 microseconds a row, whatever the rows: a batch's predict takes as long as its size."""
    time.sleep(min(10.0, len(x) * PER_ROW))
    return x


def train_per_row(path: Path) -> Path:
    """A model whose predict costs a fixed time per row (PER_ROW): the cost a chunk's size
    follows."""
    return _train_sleeping(path, sleep_per_row)


PER_CALL = 0.02  # seconds


def sleep_per_call(x: np.ndarray) -> np.ndarray:
    """20 ms a call and 2 microseconds a row: a pipeline's fixed cost per call, exaggerated."""
    time.sleep(PER_CALL + len(x) * 2e-6)
    return x


def train_per_call(path: Path) -> Path:
    """A model whose predict costs PER_CALL whatever its rows, and little a row."""
    return _train_sleeping(path, sleep_per_call)


def _train_sleeping(path: Path, sleep: Callable[[np.ndarray], np.ndarray]) -> Path:
    """A linear model behind `sleep` (a FunctionTransformer), on two columns."""
    import joblib
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = np.full((50, 2), 0.5)
    x[:, 1] = np.arange(50)
    model = make_pipeline(FunctionTransformer(sleep), LinearRegression())
    model.fit(x, x[:, 1])
    joblib.dump(model, path)
    return path
