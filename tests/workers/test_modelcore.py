import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import sklearn

from service.core.errors import ArtifactMismatch, ArtifactVersionMismatch
from service.models.registry import ModelInfo
from workers.modelcore import ModelCache, load_verified


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
