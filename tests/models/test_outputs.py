"""A model's outputs as workers compute them: a classifier Pipeline's steps run once for
predict and predict_proba, and give exactly what its own methods give."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LinearRegression

from service.models.outputs import predict_outputs
from tests.support.typed import churn


def test_a_classifier_pipeline_gives_its_own_predictions_and_probabilities() -> None:
    model, frame = churn()
    out = predict_outputs(model, frame, classifier=True)
    assert out["predictions"].tolist() == model.predict(frame).tolist()
    assert np.array_equal(out["probabilities"], model.predict_proba(frame))


def test_a_plain_regressor_gives_predictions_only() -> None:
    x = np.arange(20.0).reshape(10, 2)
    model = LinearRegression().fit(x, x.sum(axis=1))
    out = predict_outputs(model, x, classifier=False)
    assert list(out) == ["predictions"]
    assert np.array_equal(out["predictions"], model.predict(x))
