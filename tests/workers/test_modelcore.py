import dataclasses
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sqlalchemy import Engine

from service.core.errors import ArtifactMismatch, ArtifactVersionMismatch, ModelLoadError
from service.models.registry import ModelInfo
from workers.modelcore import ArtifactSource, ModelCache, load_verified


class _WritesMarker:
    """Unpickling this calls open(marker, 'w'): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_tampered_artifact_is_refused_before_it_is_unpickled(
    tmp_path: Path, models: dict[str, ModelInfo]
) -> None:
    marker = tmp_path / "pwned"
    planted = tmp_path / "artifact.joblib"
    planted.write_bytes(pickle.dumps(_WritesMarker(marker)))
    info = dataclasses.replace(models["iris"], artifact_path=str(planted))
    with pytest.raises(ArtifactMismatch, match="refusing to load"):
        load_verified(info)
    assert not marker.exists()
    # The same bytes would have run code: the check above is what stopped it.
    pickle.loads(planted.read_bytes())
    assert marker.exists()
    os.unlink(marker)


def test_cache_loads_a_model_once(models: dict[str, ModelInfo]) -> None:
    cache = ModelCache(size=1)
    first = cache.get(models["iris"])
    assert cache.get(models["iris"]) is first
    cache.get(models["diabetes"])
    assert cache.get(models["iris"]) is not first  # evicted, reloaded


@pytest.mark.parametrize(("field", "library"), [("numpy_version", "numpy"),
                                                 ("sklearn_version", "scikit-learn")])
def test_model_registered_under_another_version_is_refused_before_it_is_read(
    tmp_path: Path, models: dict[str, ModelInfo], field: str, library: str
) -> None:
    marker = tmp_path / "pwned"
    planted = tmp_path / "artifact.joblib"
    planted.write_bytes(pickle.dumps(_WritesMarker(marker)))
    info = dataclasses.replace(models["iris"], artifact_path=str(planted), **{field: "1.0.0"})
    running = np.__version__ if library == "numpy" else sklearn.__version__
    with pytest.raises(ArtifactVersionMismatch) as refused:
        load_verified(info)
    assert refused.value.message == (f"model iris 1 was made with {library} 1.0.0, this process "
                                     f"runs {library} {running}; refusing to load it")
    assert not marker.exists()


def test_model_registered_before_versions_were_recorded_still_loads(
    models: dict[str, ModelInfo],
) -> None:
    legacy = dataclasses.replace(models["iris"], sklearn_version=None, numpy_version=None)
    assert load_verified(legacy).predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == ["setosa"]


def test_a_tampered_local_copy_falls_back_to_the_verified_bytes_in_the_store(
    engine: Engine, tmp_path: Path, models: dict[str, ModelInfo]
) -> None:
    """This host's copy was replaced by a planted pickle: it is passed over (never
    unpickled), the store's bytes are loaded, and they replace the copy."""
    info = models["iris"]
    here = tmp_path / "host"
    here.mkdir()
    local = here / f"{info.sha256}.joblib"
    marker = tmp_path / "pwned"
    local.write_bytes(pickle.dumps(_WritesMarker(marker)))
    elsewhere = dataclasses.replace(info, artifact_path=str(tmp_path / "not-here.joblib"))
    model = load_verified(elsewhere, ArtifactSource(engine, str(here)).read)
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == ["setosa"]
    assert not marker.exists()
    assert hashlib.sha256(local.read_bytes()).hexdigest() == info.sha256


def test_a_directory_named_like_the_artifact_does_not_fail_the_model(
    engine: Engine, tmp_path: Path, models: dict[str, ModelInfo]
) -> None:
    """`<model dir>/<sha256>.joblib/` made a directory (by a tenant's output, when the store
    lay inside the data root): the store's bytes are loaded, and the error no job shows."""
    info = models["iris"]
    (tmp_path / f"{info.sha256}.joblib" / "x.csv").mkdir(parents=True)
    at_dir = dataclasses.replace(info, artifact_path=str(tmp_path / f"{info.sha256}.joblib"))
    model = load_verified(at_dir, ArtifactSource(engine, str(tmp_path)).read)
    assert model.predict([[6.7, 3.0, 5.2, 2.3]]).tolist() == ["virginica"]


def test_a_model_error_names_the_model_never_the_servers_path(
    tmp_path: Path, models: dict[str, ModelInfo]
) -> None:
    planted = tmp_path / "var" / "models" / "artifact.joblib"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"not the registered bytes")
    info = dataclasses.replace(models["iris"], artifact_path=str(planted))
    with pytest.raises(ArtifactMismatch) as mismatch:
        load_verified(info)
    missing = dataclasses.replace(info, artifact_path=str(tmp_path / "gone.joblib"))
    with pytest.raises(ModelLoadError) as unreadable:
        load_verified(missing)
    for error in (mismatch.value, unreadable.value):
        assert str(tmp_path) not in error.message and "iris 1" in error.message, error.message
