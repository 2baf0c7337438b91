"""Artifacts that would run code, or were made for another scikit-learn or numpy, never load:
at registration, in load_verified, and in a real worker process."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
import skops.io as skops_io
from sqlalchemy import Engine, select, update

from service.core.errors import ArtifactVersionMismatch, UntrustedTypes
from service.core.settings import Settings
from service.models import registry
from service.models.registry import ModelInfo
from service.store.db import models as models_table
from tests.support.models import sha256_file
from tests.support.processes import ROOT, WorkerProcess
from tests.support.tenants import Tenant
from workers.modelcore import load_verified

SETOSA = [5.1, 3.5, 1.4, 0.2]
SLEEP_MS = "tests.support.sleepy.sleep_ms"


class _WritesMarker:
    """Loading this creates `marker`: by pickle through __reduce__, by skops through
    __setstate__. Proof that code in the artifact ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))

    def __setstate__(self, state: dict[str, Any]) -> None:
        open(state["marker"], "w").close()  # noqa: SIM115
        self.__dict__.update(state)


WRITES_MARKER = f"{__name__}._WritesMarker"


def _classifier() -> Any:
    """A fitted classifier whose bytes no other test has: its stored file is its own."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    c = 1.0 + float(np.random.default_rng().uniform())
    return LogisticRegression(C=c, max_iter=1000).fit(iris.data, iris.target)


def _sleepy_pipeline() -> Any:
    """A regressor that calls tests.support.sleepy.sleep_ms: a type skops does not trust by
    default."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from tests.support.sleepy import sleep_ms

    x = np.random.default_rng().uniform(0, 1, size=(20, 2))
    return make_pipeline(FunctionTransformer(sleep_ms), LinearRegression()).fit(x, x @ [1, 2])


def _dumped(model: Any, path: Path) -> Path:
    joblib.dump(model, path)
    return path


def _pickled_as_if_by(sklearn_version: str, model: Any, path: Path) -> Path:
    """Pickle `model` with `_sklearn_version` in its state set to another version, as if an
    older scikit-learn had pickled it."""

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if obj is not model:
                return NotImplemented
            func, args, state, *rest = obj.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
            return (func, args, {**state, "_sklearn_version": sklearn_version}, *rest)

    with open(path, "wb") as fh:
        Pickler(fh).dump(model)
    return path


@pytest.fixture
def register(settings: Settings, engine: Engine) -> Iterator[Callable[..., ModelInfo]]:
    """Register an artifact under a unique name (it must be unique too: identical content
    shares one stored file). Afterwards the test's tampering is undone, stored bytes and row.

    The model is kept, as other tests' are: SQLite gives a deleted last row's id to the next
    row, and the session worker caches a model's metadata by id for good."""
    made: list[tuple[ModelInfo, bytes]] = []

    def add(path: Path, **kw: Any) -> ModelInfo:
        with engine.begin() as conn:
            info = registry.add_model(conn, settings.model_dir, str(path),
                                      f"safety-{uuid.uuid4().hex[:10]}", "1", **kw)
        made.append((info, Path(info.artifact_path).read_bytes()))
        return info

    yield add
    for info, data in made:
        stored = Path(info.artifact_path)
        if stored.read_bytes() != data:
            stored.write_bytes(data)
        os.chmod(stored, 0o444)
        with engine.begin() as conn:
            conn.execute(update(models_table).where(models_table.c.id == info.id).values(
                sklearn_version=info.sklearn_version, numpy_version=info.numpy_version))


def _stored_files(settings: Settings) -> set[str]:
    """The model directory's files (none before the first model is registered)."""
    if not os.path.isdir(settings.model_dir):
        return set()
    return set(os.listdir(settings.model_dir))


def test_a_planted_pickle_in_the_store_is_never_run_the_verified_bytes_are(
    worker: WorkerProcess, tenant: Tenant, register: Callable[..., ModelInfo], tmp_path: Path,
) -> None:
    """The file in the model store is replaced: its sha256 no longer matches, so the worker
    passes over it (never unpickling it), runs the job on the bytes the database keeps, and
    puts them back in place of the planted file."""
    info = register(_dumped(_classifier(), tmp_path / "model.joblib"))
    marker = tmp_path / "pwned"
    stored = Path(info.artifact_path)
    assert not stored.stat().st_mode & 0o222  # the store is read-only (root ignores that)
    if os.geteuid() != 0:
        with pytest.raises(PermissionError):
            open(stored, "ab")  # noqa: SIM115
    os.chmod(stored, 0o644)  # someone who can change the store's files got in
    stored.write_bytes(pickle.dumps(_WritesMarker(marker)))
    job = tenant.wait(tenant.submit(info.name, [SETOSA]))
    assert job["status"] == "succeeded", job
    assert tenant.get(f"/v1/jobs/{job['id']}/result").json()["predictions"] == [0]
    assert not marker.exists()
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == info.sha256


@pytest.mark.parametrize(("column", "library"), [("numpy_version", "numpy"),
                                                  ("sklearn_version", "scikit-learn")])
def test_job_on_a_model_registered_under_another_version_fails_naming_both(
    worker: WorkerProcess, tenant: Tenant, register: Callable[..., ModelInfo], engine: Engine,
    tmp_path: Path, column: str, library: str,
) -> None:
    info = register(_dumped(_classifier(), tmp_path / "model.joblib"))
    with engine.begin() as conn:
        conn.execute(update(models_table).where(models_table.c.id == info.id)
                     .values({column: "1.0.0"}))
    job = tenant.wait(tenant.submit(info.name, [SETOSA]))
    assert job["status"] == "failed"
    running = np.__version__ if library == "numpy" else sklearn.__version__
    assert job["error"] == (f"model {info.name} 1 was made with {library} 1.0.0, this process "
                            f"runs {library} {running}; refusing to load it")


def test_skops_model_runs_in_the_worker_with_the_types_trusted_at_registration(
    worker: WorkerProcess, tenant: Tenant, register: Callable[..., ModelInfo], tmp_path: Path,
) -> None:
    model = _sleepy_pipeline()
    skops_io.dump(model, tmp_path / "model.skops")
    info = register(tmp_path / "model.skops", trusted_types=[SLEEP_MS])
    job = tenant.wait(tenant.submit(info.name, [[0.0, 1.0]]))
    assert job["status"] == "succeeded", job
    result = tenant.get(f"/v1/jobs/{job['id']}/result").json()
    expected = model.predict(np.array([[0.0, 1.0]])).tolist()
    assert result["predictions"] == pytest.approx(expected)


def test_models_show_the_versions_and_format_they_were_registered_with(
    tenant: Tenant, models: dict[str, ModelInfo],
) -> None:
    detail = tenant.get("/v1/models/iris").json()  # and checked against /openapi.json
    for body in (detail, detail["versions"][0]):
        assert body["sklearn_version"] == sklearn.__version__
        assert body["numpy_version"] == np.__version__
        assert body["artifact_format"] == "joblib"


def test_artifact_pickled_by_another_scikit_learn_is_refused_at_registration(
    engine: Engine, settings: Settings, tmp_path: Path,
) -> None:
    path = _pickled_as_if_by("1.5.2", _classifier(), tmp_path / "old.joblib")
    before = _stored_files(settings)
    name = f"old-{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn, pytest.raises(ArtifactVersionMismatch) as refused:
        registry.add_model(conn, settings.model_dir, str(path), name, "1")
    assert refused.value.message == (
        f"artifact {path} (LogisticRegression) was made with scikit-learn 1.5.2, this process "
        f"runs scikit-learn {sklearn.__version__}; refusing to load it")
    assert refused.value.code == "artifact_version_mismatch"
    assert _stored_files(settings) == before
    with engine.connect() as conn:
        assert conn.execute(select(models_table).where(models_table.c.name == name)).first() \
            is None


def test_artifact_pickled_by_another_scikit_learn_is_refused_by_the_worker_load(
    models: dict[str, ModelInfo], tmp_path: Path,
) -> None:
    """The recorded versions match; the estimator's own pickled version does not."""
    path = _pickled_as_if_by("1.5.2", _classifier(), tmp_path / "old.joblib")
    info = dataclasses.replace(models["iris"], artifact_path=str(path),
                               sha256=sha256_file(path))
    with pytest.raises(ArtifactVersionMismatch, match=r"model iris 1 \(LogisticRegression\) "
                       r"was made with scikit-learn 1\.5\.2, this process runs scikit-learn "
                       + sklearn.__version__.replace(".", r"\.")):
        load_verified(info)


def test_skops_artifact_with_an_untrusted_type_is_refused_before_anything_in_it_loads(
    engine: Engine, settings: Settings, tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.skops"
    skops_io.dump(_WritesMarker(marker), path)
    before = _stored_files(settings)
    with engine.begin() as conn, pytest.raises(UntrustedTypes) as refused:
        registry.add_model(conn, settings.model_dir, str(path),
                           f"evil-{uuid.uuid4().hex[:10]}", "1")
    assert refused.value.types == [WRITES_MARKER]
    assert f"not trusted: {WRITES_MARKER};" in refused.value.message
    assert not marker.exists()
    assert _stored_files(settings) == before
    # The same file would have run code once trusted: the check above is what stopped it.
    skops_io.load(path, trusted=[WRITES_MARKER])
    assert marker.exists()


def test_skops_artifact_registers_once_its_untrusted_types_are_trusted(
    engine: Engine, settings: Settings, register: Callable[..., ModelInfo], tmp_path: Path,
) -> None:
    path = tmp_path / "model.skops"
    skops_io.dump(_sleepy_pipeline(), path)
    with engine.begin() as conn, pytest.raises(UntrustedTypes, match=f"not trusted: {SLEEP_MS};"):
        registry.add_model(conn, settings.model_dir, str(path),
                           f"untrusted-{uuid.uuid4().hex[:10]}", "1")
    info = register(path, trusted_types=[SLEEP_MS])
    stored = Path(info.artifact_path)
    assert stored.name == f"{info.sha256}.skops"
    assert not stored.stat().st_mode & 0o222
    assert info.artifact_format == "skops" and info.trusted_types == [SLEEP_MS]
    assert info.kind == "regressor" and info.n_features == 2
    # The worker trusts only what was recorded: without it, the same bytes are refused.
    with pytest.raises(UntrustedTypes, match=f"model {info.name} 1 contains types"):
        load_verified(dataclasses.replace(info, trusted_types=[]))
    assert load_verified(info).predict(np.array([[0.0, 1.0]])).shape == (1,)


def test_cli_registers_a_skops_artifact_only_with_trust_for_its_types(
    settings: Settings, engine: Engine, tmp_path: Path,
) -> None:
    path = tmp_path / "model.skops"
    skops_io.dump(_sleepy_pipeline(), path)
    name = f"cli-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}

    def add(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "models", "add", str(path), "--name", name,
             "--version", "1", *extra],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)

    refused = add()
    assert refused.returncode != 0 and f"not trusted: {SLEEP_MS};" in refused.stderr
    added = add("--trust", SLEEP_MS, "--trust", "some.other.Type")
    assert added.returncode == 0, added.stderr
    with engine.connect() as conn:
        info = registry.resolve(conn, name)
    assert info.artifact_format == "skops"
    assert info.trusted_types == ["some.other.Type", SLEEP_MS]  # sorted
