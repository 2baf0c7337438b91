"""The typed demo model: a churn pipeline trained on generated data, with an example that
pins its types, and a signal it learnt."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np

from service.models.demo_typed import FEATURES, churn_frame, train_churn
from service.models.examples import schema_for
from service.models.schema import ColumnType


def test_train_churn_writes_a_pipeline_whose_schema_has_every_type(tmp_path: Path) -> None:
    path, example = train_churn(tmp_path / "models" / "churn.joblib", n_rows=2000)
    model = joblib.load(path)
    schema = schema_for(model, example)
    kinds = {c.name: c.type for c in schema.columns}
    assert list(kinds) == FEATURES
    assert kinds["plan"] is kinds["country"] is ColumnType.STRING
    assert kinds["seats"] is ColumnType.INTEGER and kinds["annual"] is ColumnType.BOOLEAN
    assert schema.column("age").nullable and schema.frame
    frame, label = churn_frame(2000, seed=99)  # customers it did not see
    accuracy = float(np.mean(model.predict(frame) == label))
    majority = max(np.mean(label == "churn"), np.mean(label == "stay"))
    assert accuracy > majority + 0.05
