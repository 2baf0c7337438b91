"""A model's outputs for one batch: predictions, and for a classifier probabilities too."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.models import estimators


def predict_outputs(model: Any, given: Any, classifier: bool) -> dict[str, np.ndarray]:
    """`predictions` (model.predict) and, for a classifier, `probabilities` (predict_proba).

    A classifier Pipeline's steps before the last transform the rows once for both: its own
    predict and predict_proba would each run them, and for a typed pipeline that is most of
    the cost (a ColumnTransformer on a DataFrame). Without metadata routing (predq passes no
    parameters) Pipeline.predict is exactly this: each step's transform, then the last step's
    predict."""
    final, rows = model, given
    if classifier and estimators.is_pipeline(model) and len(model.steps) > 1:
        final, rows = model[-1], model[:-1].transform(given)
    out = {"predictions": np.asarray(final.predict(rows))}
    if classifier:
        out["probabilities"] = np.asarray(final.predict_proba(rows))
    return out
