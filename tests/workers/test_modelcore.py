import dataclasses
import os
import pickle
from pathlib import Path

import pytest

from service.errors import ArtifactMismatch
from service.registry import ModelInfo
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
