"""Load (check versions and sha256, then deserialize), cache, and predict on a batch."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from service.core.errors import ArtifactMismatch, ArtifactVersionMismatch, ModelLoadError
from service.models.registry import ModelInfo, load_artifact


def load_verified(info: ModelInfo) -> Any:
    """joblib.load runs pickle, so the bytes are checked against the registered sha256 first,
    and the scikit-learn and numpy running must be the ones the model was registered under."""
    check_versions(info)
    try:
        with open(info.artifact_path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read artifact of {info.name} {info.version}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != info.sha256:
        raise ArtifactMismatch(info.artifact_path, info.sha256, actual)
    # Load the verified bytes, not the path: the file could change between check and load.
    return load_artifact(data, info.artifact_format, info.trusted_types or [],
                         f"model {info.name} {info.version}")


def check_versions(info: ModelInfo) -> None:
    """Refuse a model registered under another scikit-learn or numpy than this process runs.

    The version strings must match exactly, patch level included: scikit-learn supports
    unpickling only by the version that pickled (it warns on any difference), and a numpy
    upgrade can change results or the pickled layout (numpy 2 moved numpy.core). So upgrading
    either means registering each model again, as a new version, once it has been checked.
    A version not recorded (a model registered before predq recorded it) is not compared.
    """
    import sklearn

    for library, recorded, running in (
        ("scikit-learn", info.sklearn_version, sklearn.__version__),
        ("numpy", info.numpy_version, np.__version__),
    ):
        if recorded is not None and recorded != running:
            raise ArtifactVersionMismatch(f"model {info.name} {info.version}", library, recorded,
                                          running)


class ModelCache:
    """Loaded models by id, least recently used evicted first."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._models: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: ModelInfo) -> Any:
        with self._lock:
            if info.id in self._models:
                self._models.move_to_end(info.id)
                return self._models[info.id]
        model = load_verified(info)
        with self._lock:
            self._models[info.id] = model
            while len(self._models) > self._size:
                self._models.popitem(last=False)
        return model


def predict(model: Any, info: ModelInfo, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One predict() call over many jobs' rows; classifiers also give probabilities."""
    out = {"predictions": np.asarray(model.predict(rows))}
    if info.kind == "classifier":
        out["probabilities"] = np.asarray(model.predict_proba(rows))
    for name, values in out.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"the model produced non-finite {name}")
    return out
