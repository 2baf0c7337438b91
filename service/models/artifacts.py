"""Artifacts: the bytes of a registered model, copied into the read-only model store, kept in
SQL by sha256 for hosts without the file, and loaded only once verified (joblib runs pickle;
a .skops file is checked for untrusted types before anything in it is built)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select

from service.core.errors import (
    ArtifactVersionMismatch,
    InvalidInput,
    ModelLoadError,
    UntrustedTypes,
)
from service.core.times import utcnow
from service.store.db import model_artifacts


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


def format_of(path: str, trusted_types: list[str] | None) -> tuple[str, list[str]]:
    trusted = sorted(set(trusted_types or []))
    if Path(path).suffix == ".skops":
        return "skops", trusted
    if trusted:
        raise InvalidInput("trusted_types", "only a .skops artifact has types to trust")
    return "joblib", trusted


@contextmanager
def staged_copy(model_dir: str, path: str) -> Iterator[Path]:
    """A private read-only copy in the store's directory; removed unless `place`d."""
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


def place(staged: Path, name: str) -> Path:
    """Move a checked copy to <model_dir>/<name>; identical content is stored once."""
    target = staged.parent / name
    if not target.exists():
        os.replace(staged, target)
    return target
