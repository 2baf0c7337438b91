"""A worker host without the model store: it fetches each artifact from the SQL store by its
sha256, checks it, keeps a copy and runs the job; bytes that do not match are never loaded."""

from __future__ import annotations

import hashlib
import os
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, update

from service.core.settings import Settings
from service.models import registry
from service.models.registry import ModelInfo
from service.store.db import model_artifacts
from tests.faults.conftest import Stack

SETOSA = [5.1, 3.5, 1.4, 0.2]


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _registered_elsewhere(settings: Settings, engine: Engine, tmp_path: Path
                          ) -> tuple[ModelInfo, LogisticRegression]:
    """A model registered on another host: its file is not on this one."""
    iris = load_iris()
    model = LogisticRegression(C=1 + float(np.random.default_rng().uniform()),
                               max_iter=1000).fit(iris.data, iris.target)
    joblib.dump(model, tmp_path / "model.joblib")
    with engine.begin() as conn:
        info = registry.add_model(conn, str(tmp_path / "other-host"), str(tmp_path /
                                  "model.joblib"), f"fetched-{uuid.uuid4().hex[:8]}", "1")
    os.unlink(info.artifact_path)  # that host's disk is not this host's
    return info, model


def test_a_worker_host_with_an_empty_model_directory_fetches_checks_and_keeps_the_artifact(
    stack: Callable[..., Stack], settings: Settings, engine: Engine, tmp_path: Path,
) -> None:
    info, model = _registered_elsewhere(settings, engine, tmp_path)
    here = tmp_path / "this-host"
    s = stack()
    s.start_worker(model_dir=str(here))
    tenant = s.tenant()
    job = tenant.wait(tenant.submit(info.name, [SETOSA, [6.7, 3.0, 5.2, 2.3]]))
    assert job["status"] == "succeeded", job
    result = tenant.get(f"/v1/jobs/{job['id']}/result").json()
    assert result["predictions"] == model.predict([SETOSA, [6.7, 3.0, 5.2, 2.3]]).tolist()
    kept = here / f"{info.sha256}.joblib"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == info.sha256
    assert not kept.stat().st_mode & 0o222  # read-only, like the store's own files
    assert not list(here.glob("*.tmp"))  # no temporary file left behind


def test_artifact_bytes_in_the_store_that_do_not_match_are_never_loaded_or_kept(
    stack: Callable[..., Stack], settings: Settings, engine: Engine, tmp_path: Path,
) -> None:
    info, _ = _registered_elsewhere(settings, engine, tmp_path)
    marker = tmp_path / "pwned"
    planted = pickle.dumps(_WritesMarker(marker))
    with engine.begin() as conn:  # someone who can write the database got in
        conn.execute(update(model_artifacts).where(model_artifacts.c.sha256 == info.sha256)
                     .values(data=planted, size=len(planted)))
    here = tmp_path / "this-host"
    s = stack()
    s.start_worker(model_dir=str(here))
    tenant = s.tenant()
    job = tenant.wait(tenant.submit(info.name, [SETOSA]))
    assert job["status"] == "failed"
    actual = hashlib.sha256(planted).hexdigest()
    assert job["error"] == (f"artifact store:{info.sha256} has sha256 {actual}, registered as "
                            f"{info.sha256}; refusing to load it")
    assert not marker.exists()
    assert not (here / f"{info.sha256}.joblib").exists()  # (other models may be preloaded)
