"""A scikit-learn Pipeline fitted on a pandas DataFrame of strings, a nullable number,
integers and a boolean (the demo `churn`): JSON jobs and synchronous predict, with real
workers, give the pipeline's own predictions on the same DataFrame; a wrong value is a 400 that
names row, column and the expected type."""

from __future__ import annotations

import math
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from service.models.demo_typed import FEATURES, churn_frame
from service.models.registry import ModelInfo
from tests.support.tenants import Tenant


def rows_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame's rows as a client sends them: NaN as null, numpy scalars as JSON."""
    out = []
    for record in frame.to_dict("records"):
        out.append({k: None if isinstance(v, float) and math.isnan(v) else
                    v.item() if hasattr(v, "item") else v for k, v in record.items()})
    return out


def expected(models: dict[str, ModelInfo], frame: pd.DataFrame) -> tuple[list[Any], Any]:
    pipeline = joblib.load(models["churn"].artifact_path)
    return pipeline.predict(frame).tolist(), pipeline.predict_proba(frame)


def test_json_objects_with_strings_nulls_and_booleans_get_the_pipelines_own_predictions(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object,
) -> None:
    frame, _ = churn_frame(40, seed=3)
    assert frame["age"].isna().any()  # missing values are what the imputer is for
    job_id = tenant.submit("churn", rows_of(frame))
    assert tenant.wait(job_id)["status"] == "succeeded"
    result = tenant.get(f"/v1/jobs/{job_id}/result").json()
    predictions, probabilities = expected(models, frame)
    assert result["predictions"] == predictions
    assert set(predictions) <= {"churn", "stay"}
    assert np.allclose(result["probabilities"], probabilities)


def test_lists_in_schema_order_and_an_unknown_category_go_to_the_model(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object,
) -> None:
    frame, _ = churn_frame(5, seed=4)
    frame.loc[0, "plan"] = "platinum"  # never seen: handle_unknown="ignore" takes it
    rows = [[row[name] for name in FEATURES] for row in rows_of(frame)]
    job_id = tenant.submit("churn", rows)
    assert tenant.wait(job_id)["status"] == "succeeded"
    assert tenant.get(f"/v1/jobs/{job_id}/result").json()["predictions"] == \
        expected(models, frame)[0]


def test_synchronous_predict_serves_a_typed_row(
    tenant: Tenant, models: dict[str, ModelInfo], worker: object,
) -> None:
    row = {"plan": "pro", "country": "de", "age": None, "seats": 3, "monthly_spend": 99.5,
           "support_tickets": 1, "annual": True}
    answer = tenant.post("/v1/models/churn/predict?timeout=30", json={"inputs": [row]})
    assert answer.status_code == 200, answer.text
    frame = pd.DataFrame([row])[FEATURES].astype({"age": float})
    assert answer.json()["predictions"] == expected(models, frame)[0]


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"plan": 3}, "inputs[1].plan", "expected a string, got number"),
    ({"seats": "three"}, "inputs[1].seats", "integer"),
    ({"annual": "yes"}, "inputs[1].annual", "boolean"),
    ({"annual": None}, "inputs[1].annual", "missing"),
    ({"country": "x" * 1001}, "inputs[1].country", "at most 1000"),
])
def test_a_value_of_the_wrong_type_names_row_column_and_type(
    tenant: Tenant, change: dict[str, Any], field: str, reason: str,
) -> None:
    rows = rows_of(churn_frame(2, seed=5)[0])
    rows[1].update(change)
    response = tenant.post("/v1/jobs", json={"model": "churn", "inputs": rows})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field and reason in error["message"], error


def test_the_model_view_shows_the_typed_schema(tenant: Tenant) -> None:
    schema = tenant.get("/v1/models/churn").json()["inputs"]
    columns = {c["name"]: c for c in schema["columns"]}
    assert schema["input"] == "dataframe"
    assert [c["name"] for c in schema["columns"]] == FEATURES
    assert columns["plan"]["type"] == "string" and "pro" in columns["plan"]["categories"]
    assert columns["age"] == {"name": "age", "type": "number", "nullable": True}
    assert columns["annual"]["type"] == "boolean" and columns["seats"]["type"] == "integer"
    assert tenant.get("/v1/models/iris").json()["inputs"]["input"] == "array"
