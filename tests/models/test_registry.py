import hashlib
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sqlalchemy import Engine, text

from migrations.runner import upgrade
from service.core.errors import Conflict, InvalidInput
from service.models import artifacts, registry
from service.models.registry import ModelInfo
from service.store.db import make_engine
from tests.support.models import sha256_file
from tests.support.processes import ROOT


def test_registered_artifact_is_stored_read_only_under_its_sha256(
    engine: Engine, models: dict[str, ModelInfo]
) -> None:
    iris = models["iris"]
    path = Path(iris.artifact_path)
    assert path.name == f"{iris.sha256}.joblib"
    assert sha256_file(path) == iris.sha256
    assert not os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert iris.kind == "classifier" and iris.labels == ["setosa", "versicolor", "virginica"]
    assert models["diabetes"].kind == "regressor" and models["diabetes"].n_features == 10


def test_latest_version_is_the_default(engine: Engine, settings, models) -> None:  # type: ignore[no-untyped-def]
    # A name of its own, and the rows stay: SQLite would give a deleted model's id to the next
    # model, which a worker that knew the deleted one would take for it.
    name = f"iris-versions-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        v2 = registry.add_model(conn, settings.model_dir, models["iris"].artifact_path,
                                name, "2024.1")
        v3 = registry.add_model(conn, settings.model_dir, models["iris"].artifact_path,
                                name, "2024.2")
    with engine.connect() as conn:
        assert registry.resolve(conn, name).id == v3.id
        assert registry.resolve(conn, name, "2024.1").id == v2.id


def test_same_name_and_version_twice_is_a_conflict(engine: Engine, settings, models) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn, pytest.raises(Conflict):
        registry.add_model(conn, settings.model_dir, models["iris"].artifact_path, "iris", "1")


def test_feature_names_must_match_the_model_width(engine: Engine, settings, models) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn, pytest.raises(InvalidInput, match="3 names for a model of 4"):
        registry.add_model(conn, settings.model_dir, models["iris"].artifact_path,
                           "iris-named", "1", feature_names=["a", "b", "c"])


def test_registration_records_the_scikit_learn_and_numpy_it_ran_under(
    models: dict[str, ModelInfo],
) -> None:
    iris = models["iris"]
    assert (iris.sklearn_version, iris.numpy_version) == (sklearn.__version__, np.__version__)
    assert iris.artifact_format == "joblib" and iris.trusted_types is None
    assert iris.public()["numpy_version"] == np.__version__


def test_trusted_types_are_only_for_skops_artifacts(engine: Engine, settings, models) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn, pytest.raises(InvalidInput, match="only a .skops artifact"):
        registry.add_model(conn, settings.model_dir, models["iris"].artifact_path,
                           "iris-trusting", "1", trusted_types=["builtins.open"])


def test_skops_stays_an_optional_import() -> None:
    code = ("import sys, service.api, service.models.registry, workers.modelcore, workers.main; "
            "sys.exit('skops' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_the_upgrade_copies_readable_artifacts_into_the_store(tmp_path: Path) -> None:
    """Models registered before artifacts were kept in the store get them at `db upgrade`;
    one whose file is not on this host is skipped (the upgrade still succeeds)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0009")
    data = tmp_path / "a.joblib"
    data.write_bytes(b"the bytes of a model")
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    engine = make_engine(url)
    with engine.begin() as conn:
        for name, sha256, path in (("here", digest, str(data)),
                                   ("elsewhere", "0" * 64, str(tmp_path / "gone.joblib"))):
            conn.execute(text(
                "INSERT INTO models (name, version, kind, n_features, feature_names, sha256, "
                "artifact_path, created_at, artifact_format) VALUES (:n, '1', 'regressor', 1, "
                "'[\"x\"]', :s, :p, '2026-01-01 00:00:00', 'joblib')"),
                {"n": name, "s": sha256, "p": path})
    upgrade(url)
    with engine.connect() as conn:
        assert artifacts.artifact_bytes(conn, digest) == b"the bytes of a model"
        assert artifacts.artifact_bytes(conn, "0" * 64) is None
    engine.dispose()


def test_a_calls_fixed_cost_is_not_counted_as_its_rows(tmp_path: Path) -> None:
    """A pipeline spends a fixed time a call (20 ms here) and little a row (2 us): the cost
    that sizes its chunks is the row's, else chunks of a typed pipeline hold a tenth of the
    rows a quarter of a second allows."""
    import joblib

    from service.models import costs
    from service.models.schema import InputSchema
    from tests.support.sleepy import PER_CALL, train_per_call

    model = joblib.load(train_per_call(tmp_path / "per-call.joblib"))
    per_row = costs.measure_at_registration(model, InputSchema.numbers(["a", "b"], False),
                                            classifier=False)
    # Counting the call in: (20 ms + 2 ms) / 1,000 rows = 22 us a row.
    assert per_row is not None and per_row < PER_CALL / costs.SAMPLE_ROWS / 4, per_row
