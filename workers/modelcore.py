"""Load (check versions and sha256, then deserialize), cache, and predict on a batch."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from service.core.errors import ArtifactMismatch, ArtifactVersionMismatch, ModelLoadError
from service.models import registry
from service.models.registry import ModelInfo, load_artifact

log = logging.getLogger(__name__)


def read_file(info: ModelInfo) -> bytes:
    try:
        with open(info.artifact_path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ModelLoadError(f"cannot read artifact of {info.name} {info.version}: {exc}") from exc


class ArtifactSource:
    """Where a worker host finds an artifact's bytes: the registered path (a shared model
    volume, or the host that registered it), else its own copy under `model_dir`, else the
    store, which keeps every artifact by sha256. Bytes from the store are checked against the
    sha256 before they are cached on this host; every read is checked again before loading."""

    def __init__(self, engine: Engine, model_dir: str) -> None:
        self.engine, self.model_dir = engine, Path(model_dir)

    def read(self, info: ModelInfo) -> bytes:
        local = self.model_dir / f"{info.sha256}.{info.artifact_format}"
        for path in (Path(info.artifact_path), local):
            if path.is_file():
                return read_file(dataclasses.replace(info, artifact_path=str(path)))
        with self.engine.connect() as conn:
            data = registry.artifact_bytes(conn, info.sha256)
        if data is None:
            raise ModelLoadError(f"cannot read artifact of {info.name} {info.version}: not at "
                                 f"{info.artifact_path}, nor under {self.model_dir}, nor in "
                                 "the store")
        actual = hashlib.sha256(data).hexdigest()
        if actual != info.sha256:
            raise ArtifactMismatch(f"store:{info.sha256}", info.sha256, actual)
        self.model_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.model_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, local)  # atomic: another process of this host may fetch it too
        log.info("fetched artifact of %s %s from the store into %s", info.name, info.version,
                 local)
        return data


def load_verified(info: ModelInfo, read: Callable[[ModelInfo], bytes] = read_file) -> Any:
    """joblib.load runs pickle, so the bytes are checked against the registered sha256 first,
    and the scikit-learn and numpy running must be the ones the model was registered under."""
    check_versions(info)
    data = read(info)
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

    def __init__(self, size: int = 8, read: Callable[[ModelInfo], bytes] = read_file) -> None:
        self._size, self._read = size, read
        self._models: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def adopt(self, other: ModelCache) -> None:
        """Take the models `other` holds (a cache filled by the main process before the pool
        forked: a pool process starts with them, their memory shared until written)."""
        with self._lock:
            self._models.update(other._models)
            self._evict()

    def __contains__(self, model_id: object) -> bool:
        with self._lock:
            return model_id in self._models

    def get(self, info: ModelInfo) -> Any:
        with self._lock:
            if info.id in self._models:
                self._models.move_to_end(info.id)
                return self._models[info.id]
        model = load_verified(info, self._read)
        with self._lock:
            self._models[info.id] = model
            self._evict()
        return model

    def _evict(self) -> None:
        """Drop the least recently used models past the size (the lock held)."""
        while len(self._models) > self._size:
            self._models.popitem(last=False)


def predict(model: Any, info: ModelInfo, rows: np.ndarray) -> dict[str, np.ndarray]:
    """One predict() call over many jobs' rows; classifiers also give probabilities."""
    out = {"predictions": np.asarray(model.predict(rows))}
    if info.kind == "classifier":
        out["probabilities"] = np.asarray(model.predict_proba(rows))
    for name, values in out.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"the model produced non-finite {name}")
    return out
