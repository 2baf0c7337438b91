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
from service.models import artifacts, libraries
from service.models.artifacts import load_artifact
from service.models.modelinput import Batch, to_model_input
from service.models.outputs import predict_outputs
from service.models.registry import ModelInfo

log = logging.getLogger(__name__)


def read_file(info: ModelInfo) -> bytes:
    try:
        with open(info.artifact_path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        # A job's error is shown to its tenant: it names the model, never the server's path.
        log.error("cannot read %s: %s", info.artifact_path, exc)
        raise ModelLoadError(f"cannot read artifact of {info.name} {info.version}: "
                             f"{exc.strerror or type(exc).__name__}") from exc


class ArtifactSource:
    """Where a worker host finds an artifact's bytes: the registered path (a shared model
    volume, or the host that registered it), else its own copy under `model_dir`, else the
    store, which keeps every artifact by sha256. A file whose bytes do not match the sha256
    (tampered with, or half written) is passed over for the next place; bytes from the store
    are checked before they replace this host's copy; every read is checked again before
    loading."""

    def __init__(self, engine: Engine, model_dir: str) -> None:
        self.engine, self.model_dir = engine, Path(model_dir)

    def read(self, info: ModelInfo) -> bytes:
        local = self.model_dir / f"{info.sha256}.{info.artifact_format}"
        for path in (Path(info.artifact_path), local):
            if path.is_file():
                data = read_file(dataclasses.replace(info, artifact_path=str(path)))
                if hashlib.sha256(data).hexdigest() == info.sha256:
                    return data
                log.warning("%s does not match the sha256 of %s %s: reading the store's bytes",
                            path, info.name, info.version)
        with self.engine.connect() as conn:
            stored = artifacts.artifact_bytes(conn, info.sha256)
        if stored is None:
            raise ModelLoadError(f"cannot read artifact of {info.name} {info.version}: not on "
                                 "this host, nor in the store")
        actual = hashlib.sha256(stored).hexdigest()
        if actual != info.sha256:
            raise ArtifactMismatch(f"store:{info.sha256}", info.sha256, actual)
        try:
            self._keep(local, stored)
        except OSError as exc:  # the job runs on the verified bytes all the same
            log.warning("could not keep %s %s's artifact as %s: %s", info.name, info.version,
                        local, exc)
        return stored

    def _keep(self, local: Path, data: bytes) -> None:
        """Keep verified bytes as this host's copy, replacing a copy that did not match."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.model_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, local)  # atomic: another process of this host may fetch it too
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("kept the store's verified bytes as %s", local)


def load_verified(info: ModelInfo, read: Callable[[ModelInfo], bytes] = read_file) -> Any:
    """joblib.load runs pickle, so the bytes are checked against the registered sha256 first,
    and the scikit-learn and numpy running must be the ones the model was registered under."""
    check_versions(info)
    data = read(info)
    actual = hashlib.sha256(data).hexdigest()
    if actual != info.sha256:  # named by model, not path: a job's error reaches its tenant
        raise ArtifactMismatch(f"of {info.name} {info.version}", info.sha256, actual)
    # Load the verified bytes, not the path: the file could change between check and load.
    return load_artifact(data, info.artifact_format, info.trusted_types or [],
                         f"model {info.name} {info.version}")


def check_versions(info: ModelInfo) -> None:
    """Refuse a model registered under another scikit-learn, numpy, LightGBM or XGBoost than
    this process runs.

    The version strings must match exactly, patch level included: scikit-learn supports
    unpickling only by the version that pickled (it warns on any difference), and a numpy
    upgrade can change results or the pickled layout (numpy 2 moved numpy.core); a booster
    unpickled by another version of its library may predict otherwise. So upgrading any of
    them means registering each model again, as a new version, once it has been checked.
    A version not recorded (a model registered before predq recorded it) is not compared.
    """
    import sklearn

    for library, recorded, running in (
        ("scikit-learn", info.sklearn_version, sklearn.__version__),
        ("numpy", info.numpy_version, np.__version__),
        *((name, version, _running(name)) for name, version in (info.libraries or {}).items()),
    ):
        if recorded is not None and recorded != running:
            raise ArtifactVersionMismatch(f"model {info.name} {info.version}", library, recorded,
                                          running)


def _running(library: str) -> str:
    """The version of an optional model library this process has ("not installed" if none)."""
    try:
        return libraries.running_version(library)
    except ImportError:
        return "not installed"


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


class RowFailed(ValueError):
    """The model failed on a batch because of one row (`row`, from 0 in the batch), and
    `column` when the row shows which (a value that is not finite)."""

    def __init__(self, row: int, reason: str, column: str | None = None) -> None:
        super().__init__(reason)
        self.row, self.reason, self.column = row, reason, column


def predict(model: Any, info: ModelInfo, rows: Batch) -> dict[str, np.ndarray]:
    """One predict() call over many jobs' rows, given to the model as it was fitted on (a
    DataFrame with the schema's dtypes, or an array); classifiers also give probabilities.
    Non-finite outputs raise RowFailed naming the first row that has them."""
    out = predict_outputs(model, to_model_input(rows, info.schema), info.kind == "classifier")
    for name, values in out.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            row = int(np.argmin(finite))
            raise RowFailed(row, f"the model produced non-finite {name}",
                            _non_finite_column(rows, info, row))
    return out


def first_failing_row(model: Any, info: ModelInfo, rows: Batch, error: Exception
                      ) -> RowFailed:
    """The first row the model fails on, found by halving (predict on prefixes: about twice
    the batch's rows predicted, once, on the failure path only); `error` is what the whole
    batch raised."""
    if isinstance(error, RowFailed):
        return error
    low, high = 0, len(rows)  # the first failing row is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        try:
            predict(model, info, rows[:middle])
            low = middle
        except RowFailed as failed:
            return failed
        except Exception:  # noqa: BLE001 - a prefix fails: the row is in it
            high = middle
    return RowFailed(low, f"{type(error).__name__}: {error}",
                     _non_finite_column(rows, info, low))


def _non_finite_column(rows: Batch, info: ModelInfo, row: int) -> str | None:
    """The first column of `row` holding a value that is not finite (numbers only)."""
    if not isinstance(rows, np.ndarray) or not 0 <= row < len(rows):
        return None
    bad = np.flatnonzero(~np.isfinite(rows[row]))
    return info.schema.names[int(bad[0])] if len(bad) else None
