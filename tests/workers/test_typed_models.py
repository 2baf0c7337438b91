"""Typed models that data teams ship, registered and served with real workers: a datetime
column only an input example can type, HistGradientBoosting on a `category` column with NaN
taken natively, an OrdinalEncoder branch with a dropped column, LightGBM inside a pipeline.
Each serves JSON rows and a Parquet upload with the model's own predictions on the frame."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from service.core.errors import ModelLoadError
from service.core.settings import Settings
from service.models.registry import add_model, list_models
from tests.support import typed
from tests.support.tenants import Tenant


def lightgbm_pipeline(n_rows: int = 400) -> tuple[Any, pd.DataFrame]:
    lightgbm = pytest.importorskip("lightgbm")
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, label = typed.churn_frame(n_rows, seed=8)
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["plan", "country"]),
                                ("passthrough", ["age", "seats"])),
        lightgbm.LGBMClassifier(n_estimators=20, verbose=-1))
    frame = frame[["plan", "country", "age", "seats"]]
    return model.fit(frame, label), frame


def register(engine: Engine, settings: Settings, tmp_path: Path, model: Any,
             example: Any = None) -> str:
    name = f"typed-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.joblib"
    joblib.dump(model, path)
    with engine.begin() as conn:
        add_model(conn, settings.model_dir, str(path), name, "1", example=example)
    return name


@pytest.mark.parametrize("make", [typed.dated, typed.hist_gradient_boosting, typed.ordinal,
                                  lightgbm_pipeline])
def test_a_typed_model_serves_json_rows_and_a_parquet_upload(
    engine: Engine, settings: Settings, tenant: Tenant, worker: object, tmp_path: Path,
    make: Callable[[], tuple[Any, pd.DataFrame]],
) -> None:
    model, frame = make()
    sample = frame.head(60)
    name = register(engine, settings, tmp_path, model, example=frame.head(5))
    want = model.predict(sample).tolist()
    job_id = tenant.submit(name, typed.json_rows(sample))
    assert tenant.wait(job_id, timeout=60)["status"] == "succeeded"
    got = tenant.get(f"/v1/jobs/{job_id}/result").json()["predictions"]
    assert got == pytest.approx(want) if isinstance(want[0], float) else got == want
    body = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(sample, preserve_index=False), body)
    upload = tenant.post(f"/v1/jobs?model={name}", data=body.getvalue(),
                         headers={"Content-Type": "application/vnd.apache.parquet"})
    assert upload.status_code == 202, upload.text
    assert tenant.wait(upload.json()["id"], timeout=60)["status"] == "succeeded"
    got = tenant.get(f"/v1/jobs/{upload.json()['id']}/result").json()["predictions"]
    assert got == pytest.approx(want) if isinstance(want[0], float) else got == want


def test_a_model_whose_inputs_cannot_be_determined_is_refused_unless_an_example_says(
    engine: Engine, settings: Settings, tmp_path: Path,
) -> None:
    model, frame = typed.dated()
    with pytest.raises(ModelLoadError, match="--example"):
        register(engine, settings, tmp_path, model)
    name = register(engine, settings, tmp_path, model, example=frame.head(3))
    with engine.connect() as conn:
        [info] = list_models(conn, name)
    assert info.schema.column("signup").type.value == "datetime"
    assert info.libraries is None


def test_lightgbm_versions_are_recorded_at_registration(
    engine: Engine, settings: Settings, tmp_path: Path,
) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    model, _ = lightgbm_pipeline()
    name = register(engine, settings, tmp_path, model)
    with engine.connect() as conn:
        [info] = list_models(conn, name)
    assert info.libraries == {"lightgbm": lightgbm.__version__}


def test_a_worker_with_another_lightgbm_refuses_the_model(
    engine: Engine, settings: Settings, tmp_path: Path,
) -> None:
    import dataclasses

    from service.core.errors import ArtifactVersionMismatch
    from workers.modelcore import check_versions

    pytest.importorskip("lightgbm")
    model, _ = lightgbm_pipeline()
    name = register(engine, settings, tmp_path, model)
    with engine.connect() as conn:
        [info] = list_models(conn, name)
    check_versions(info)  # the versions this process runs
    with pytest.raises(ArtifactVersionMismatch, match="lightgbm"):
        check_versions(dataclasses.replace(info, libraries={"lightgbm": "3.0.0"}))
