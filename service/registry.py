"""Model metadata: name, version, signature and the sha256 of the artifact."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from service.db import models
from service.errors import Conflict, InvalidInput, ModelLoadError, ModelNotFound
from service.jobs import utcnow


@dataclass(frozen=True)
class ModelInfo:
    """A registered model version: what the API validates against and the worker loads."""

    id: int
    name: str
    version: str
    kind: str
    n_features: int
    feature_names: list[str]
    labels: list[Any] | None
    sha256: str
    artifact_path: str
    sklearn_version: str | None
    cache_ttl: int | None = None  # seconds a single-row result is served from Redis

    def public(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
            "sha256": self.sha256,
            "sklearn_version": self.sklearn_version,
            "cache_ttl": self.cache_ttl,
        }
        if self.labels is not None:
            out["labels"] = self.labels
        return out


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signature_of(model: Any) -> dict[str, Any]:
    """Infer kind, feature count and names, and labels from a fitted scikit-learn estimator."""
    if not hasattr(model, "predict"):
        raise ModelLoadError(f"{type(model).__name__} has no predict(); not a model")
    n_features = getattr(model, "n_features_in_", None)
    if n_features is None:
        raise ModelLoadError("the model is not fitted (no n_features_in_)")
    names = getattr(model, "feature_names_in_", None)
    feature_names = [str(n) for n in names] if names is not None else [
        f"x{i}" for i in range(int(n_features))
    ]
    classes = getattr(model, "classes_", None)
    labels = None
    if classes is not None and hasattr(model, "predict_proba"):
        labels = [c.item() if hasattr(c, "item") else c for c in classes]
    return {
        "kind": "regressor" if labels is None else "classifier",
        "n_features": int(n_features),
        "feature_names": feature_names,
        "labels": labels,
    }


def add_model(
    conn: Connection,
    model_dir: str,
    path: str,
    name: str,
    version: str,
    feature_names: list[str] | None = None,
    cache_ttl: int | None = None,
) -> ModelInfo:
    """Copy the artifact into the read-only model store and record its signature and sha256.

    The operator vouches for the file they register: it is loaded once here (after hashing the
    stored copy) to read its signature. Workers only load a file whose sha256 still matches.
    """
    import joblib
    import sklearn

    _check_name(name, "name")
    _check_name(version, "version")
    if cache_ttl is not None and not 0 < cache_ttl <= 30 * 86400:
        raise InvalidInput("cache_ttl", "must be between 1 second and 30 days")
    if conn.execute(
        select(models.c.id).where(models.c.name == name, models.c.version == version)
    ).first():
        raise Conflict(f"model {name!r} version {version!r} is already registered")
    stored = _store_artifact(model_dir, path)
    signature = signature_of(joblib.load(stored))
    if feature_names is not None:
        if len(feature_names) != signature["n_features"]:
            raise InvalidInput(
                "feature_names",
                f"{len(feature_names)} names for a model of {signature['n_features']} features",
            )
        signature["feature_names"] = feature_names
    row = {
        "name": name,
        "version": version,
        **signature,
        "sha256": sha256_file(stored),
        "artifact_path": str(stored),
        "sklearn_version": sklearn.__version__,
        "created_at": utcnow(),
        "cache_ttl": cache_ttl,
    }
    model_id = conn.execute(insert(models).returning(models.c.id), row).scalar_one()
    return ModelInfo(id=model_id, **{k: row[k] for k in _INFO_FIELDS})


def resolve(conn: Connection, name: str, version: str | None = None) -> ModelInfo:
    """The named version, or the most recently registered one when version is None."""
    stmt = select(models).where(models.c.name == name)
    if version is not None:
        stmt = stmt.where(models.c.version == version)
    row = conn.execute(stmt.order_by(models.c.id.desc()).limit(1)).mappings().first()
    if row is None:
        raise ModelNotFound(name, version)
    return _info(row)


def by_id(conn: Connection, model_id: int) -> ModelInfo:
    row = conn.execute(select(models).where(models.c.id == model_id)).mappings().first()
    if row is None:
        raise ModelNotFound(f"#{model_id}")
    return _info(row)


def list_models(conn: Connection, name: str | None = None) -> list[ModelInfo]:
    stmt = select(models).order_by(models.c.name, models.c.id)
    if name is not None:
        stmt = stmt.where(models.c.name == name)
    return [_info(row) for row in conn.execute(stmt).mappings()]


_INFO_FIELDS = (
    "name", "version", "kind", "n_features", "feature_names", "labels", "sha256",
    "artifact_path", "sklearn_version", "cache_ttl",
)


def _info(row: Any) -> ModelInfo:
    return ModelInfo(id=row["id"], **{k: row[k] for k in _INFO_FIELDS})


def _check_name(value: str, field: str) -> None:
    if not value or len(value) > 50 or not all(c.isalnum() or c in "-_." for c in value):
        raise InvalidInput(field, "use 1-50 letters, digits, '-', '_' or '.'")


def _store_artifact(model_dir: str, path: str) -> Path:
    """Copy to <model_dir>/<sha256>.joblib, read-only; identical content is stored once."""
    src = Path(path)
    if not src.is_file():
        raise ModelLoadError(f"no artifact at {path}")
    target_dir = Path(model_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target_dir, suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        target = target_dir / f"{sha256_file(tmp)}.joblib"
        if not target.exists():
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
