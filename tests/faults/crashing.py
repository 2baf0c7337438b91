"""A classifier that kills the process predicting it when a row starts with 666: poison input."""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np

MARKER = 666.0


class CrashOnMarker:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.n_features_in_ = model.n_features_in_
        self.classes_ = model.classes_

    def _check(self, rows: np.ndarray) -> None:
        if (np.asarray(rows)[:, 0] == MARKER).any():
            os.kill(os.getpid(), signal.SIGKILL)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        self._check(rows)
        return np.asarray(self.model.predict(rows))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        self._check(rows)
        return np.asarray(self.model.predict_proba(rows))
