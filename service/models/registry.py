"""Model metadata: name, version, signature, the sha256 of the artifact and the versions of
scikit-learn and numpy it was registered under; and loading an artifact's verified bytes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from service.core.errors import (
    ArtifactVersionMismatch,
    Conflict,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    UntrustedTypes,
)
from service.core.times import utcnow
from service.store.db import model_artifacts, models


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
    numpy_version: str | None = None  # None: registered before predq recorded it
    artifact_format: str = "joblib"  # | "skops"
    trusted_types: list[str] | None = None  # skops: the types the operator trusted

    def public(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "n_features": self.n_features,
            "feature_names": self.feature_names,
            "sha256": self.sha256,
            "sklearn_version": self.sklearn_version,
            "numpy_version": self.numpy_version,
            "artifact_format": self.artifact_format,
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
    trusted_types: list[str] | None = None,
) -> ModelInfo:
    """Copy the artifact into the read-only model store and record its signature, sha256 and
    the scikit-learn and numpy versions of this process (workers refuse to load it under others).

    A joblib artifact runs pickle: the operator vouches for the file they register. A `.skops`
    one is refused before anything in it is loaded if it holds types that neither skops nor
    `trusted_types` trusts. Either is refused if pickled by another scikit-learn version.
    """
    import numpy
    import sklearn

    _check_name(name, "name")
    _check_name(version, "version")
    if cache_ttl is not None and not 0 < cache_ttl <= 30 * 86400:
        raise InvalidInput("cache_ttl", "must be between 1 second and 30 days")
    artifact_format, trusted = _format_of(path, trusted_types)
    if conn.execute(
        select(models.c.id).where(models.c.name == name, models.c.version == version)
    ).first():
        raise Conflict(f"model {name!r} version {version!r} is already registered")
    with _staged_copy(model_dir, path) as staged:
        data = staged.read_bytes()  # hashed, checked and loaded: the same bytes
        sha256 = hashlib.sha256(data).hexdigest()
        model = load_artifact(data, artifact_format, trusted, f"artifact {path}")
        signature = _signature(model, feature_names)
        stored = _place(staged, f"{sha256}.{artifact_format}")
    store_artifact(conn, sha256, data)
    row = {
        "name": name,
        "version": version,
        **signature,
        "sha256": sha256,
        "artifact_path": str(stored),
        "sklearn_version": sklearn.__version__,
        "numpy_version": numpy.__version__,
        "artifact_format": artifact_format,
        "trusted_types": trusted if artifact_format == "skops" else None,
        "created_at": utcnow(),
        "cache_ttl": cache_ttl,
    }
    model_id = conn.execute(insert(models).returning(models.c.id), row).scalar_one()
    return ModelInfo(id=model_id, **{k: row[k] for k in _INFO_FIELDS})


def store_artifact(conn: Connection, sha256: str, data: bytes) -> None:
    """Keep the artifact's bytes in the store (once per sha256) for hosts without the file."""
    if conn.execute(select(model_artifacts.c.sha256).where(
            model_artifacts.c.sha256 == sha256)).first() is None:
        conn.execute(insert(model_artifacts).values(sha256=sha256, size=len(data), data=data,
                                                    created_at=utcnow()))


def artifact_bytes(conn: Connection, sha256: str) -> bytes | None:
    """The stored bytes of the artifact with this sha256 (unverified: the caller checks)."""
    data = conn.execute(select(model_artifacts.c.data).where(
        model_artifacts.c.sha256 == sha256)).scalar_one_or_none()
    return None if data is None else bytes(data)


def load_artifact(data: bytes, artifact_format: str, trusted: list[str], subject: str) -> Any:
    """The model in verified bytes. An estimator pickled by another scikit-learn version (its
    InconsistentVersionWarning) is refused, as is, in a .skops file, any type not trusted."""
    from sklearn.exceptions import InconsistentVersionWarning

    try:
        # Not thread-safe (process-wide filters): registration and prefork workers load alone.
        with warnings.catch_warnings():
            warnings.simplefilter("error", InconsistentVersionWarning)
            if artifact_format == "skops":
                return _skops_loads(data, trusted, subject)
            import joblib

            return joblib.load(io.BytesIO(data))
    except InconsistentVersionWarning as exc:
        raise ArtifactVersionMismatch(
            f"{subject} ({exc.estimator_name})", "scikit-learn",
            exc.original_sklearn_version, exc.current_sklearn_version,
        ) from None


def _skops_loads(data: bytes, trusted: list[str], subject: str) -> Any:
    try:
        import skops.io
    except ImportError as exc:
        raise ModelLoadError(
            f"{subject} is a .skops artifact: install the optional skops package "
            "(pip install 'predq[skops]')"
        ) from exc
    try:
        found = skops.io.get_untrusted_types(data=data)  # reads the schema, builds nothing
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{subject} is not a readable .skops file: {exc}") from exc
    untrusted = sorted(set(found) - set(trusted))
    if untrusted:
        raise UntrustedTypes(subject, untrusted)
    return skops.io.loads(data, trusted=trusted)


def resolve(conn: Connection, name: str, version: str | None = None) -> ModelInfo:
    """The named version, or the most recently registered one when version is None."""
    if not _is_name(name) or (version is not None and not _is_name(version)):
        raise ModelNotFound(name, version)  # never registered (and no NUL reaches PostgreSQL)
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
    if name is not None and not _is_name(name):
        return []
    stmt = select(models).order_by(models.c.name, models.c.id)
    if name is not None:
        stmt = stmt.where(models.c.name == name)
    return [_info(row) for row in conn.execute(stmt).mappings()]


_INFO_FIELDS = (
    "name", "version", "kind", "n_features", "feature_names", "labels", "sha256",
    "artifact_path", "sklearn_version", "cache_ttl", "numpy_version", "artifact_format",
    "trusted_types",
)


def _info(row: Any) -> ModelInfo:
    return ModelInfo(id=row["id"], **{k: row[k] for k in _INFO_FIELDS})


def _is_name(value: str) -> bool:
    return 0 < len(value) <= 50 and all(c.isalnum() or c in "-_." for c in value)


def _check_name(value: str, field: str) -> None:
    if not _is_name(value):
        raise InvalidInput(field, "use 1-50 letters, digits, '-', '_' or '.'")


def _format_of(path: str, trusted_types: list[str] | None) -> tuple[str, list[str]]:
    trusted = sorted(set(trusted_types or []))
    if Path(path).suffix == ".skops":
        return "skops", trusted
    if trusted:
        raise InvalidInput("trusted_types", "only a .skops artifact has types to trust")
    return "joblib", trusted


def _signature(model: Any, feature_names: list[str] | None) -> dict[str, Any]:
    signature = signature_of(model)
    if feature_names is not None:
        if len(feature_names) != signature["n_features"]:
            raise InvalidInput(
                "feature_names",
                f"{len(feature_names)} names for a model of {signature['n_features']} features",
            )
        signature["feature_names"] = feature_names
    return signature


@contextmanager
def _staged_copy(model_dir: str, path: str) -> Iterator[Path]:
    """A private read-only copy in the store's directory; removed unless `_place`d."""
    src = Path(path)
    if not src.is_file():
        raise ModelLoadError(f"no artifact at {path}")
    target_dir = Path(model_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target_dir, suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o444)
        yield Path(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _place(staged: Path, name: str) -> Path:
    """Move a checked copy to <model_dir>/<name>; identical content is stored once."""
    target = staged.parent / name
    if not target.exists():
        os.replace(staged, target)
    return target
