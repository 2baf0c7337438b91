"""Model metadata: name, version, kind and labels, the typed input schema, the sha256 of the
artifact and the versions of scikit-learn, numpy and any optional model library (LightGBM,
XGBoost) it was registered under. The artifact's bytes are `artifacts`'."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, insert, select

from service.core.errors import (
    Conflict,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
)
from service.core.times import utcnow
from service.models import artifacts, costs
from service.models.examples import schema_for
from service.models.libraries import libraries_of
from service.models.schema import InputSchema
from service.store.db import models


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
    input_schema: InputSchema | None = None  # None: registered before types (all numbers)
    libraries: dict[str, str] | None = None  # optional model libraries' versions, if any

    @property
    def schema(self) -> InputSchema:
        """The typed input schema (a model registered before types takes numbers)."""
        return self.input_schema or InputSchema.numbers(self.feature_names)

    @property
    def numbers(self) -> bool:
        """Its inputs are a float64 matrix (fitted on an array of numbers), NaN where a
        nullable column is missing: stored as float64 rows whatever path read them."""
        schema = self.schema
        return schema.numeric_only and not schema.frame

    @property
    def plain(self) -> bool:
        """`numbers` with no missing values, as every model's were before types: the fast
        paths that parse straight into float64 serve it."""
        return self.numbers and not any(c.nullable for c in self.schema.columns)

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
            "inputs": self.schema.public(),
        }
        if self.labels is not None:
            out["labels"] = self.labels
        if self.libraries:
            out["libraries"] = self.libraries
        return out


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
    *,
    example: Any = None,
    closed: Sequence[str] = (),
) -> ModelInfo:
    """Copy the artifact into the read-only model store and record its signature, its typed
    input schema, sha256 and the versions of scikit-learn, numpy and any LightGBM or XGBoost
    of this process (workers refuse to load it under others).

    The schema is inferred from the fitted estimator and pinned by `example` (a DataFrame, an
    Arrow table or rows) where given; `closed` columns refuse categories the model does not
    know. A model whose inputs cannot be determined is refused here, with a message that says
    to give an example, never accepted to fail every job. A joblib artifact runs pickle: the
    operator vouches for the file they register. A `.skops` one is refused before anything in
    it is loaded if it holds types that neither skops nor `trusted_types` trusts. Either is
    refused if pickled by another scikit-learn version.
    """
    import numpy
    import sklearn

    _check_name(name, "name")
    _check_name(version, "version")
    if cache_ttl is not None and not 0 < cache_ttl <= 30 * 86400:
        raise InvalidInput("cache_ttl", "must be between 1 second and 30 days")
    artifact_format, trusted = artifacts.format_of(path, trusted_types)
    if conn.execute(
        select(models.c.id).where(models.c.name == name, models.c.version == version)
    ).first():
        raise Conflict(f"model {name!r} version {version!r} is already registered")
    with artifacts.staged_copy(model_dir, path) as staged:
        data = staged.read_bytes()  # hashed, checked and loaded: the same bytes
        sha256 = hashlib.sha256(data).hexdigest()
        model = artifacts.load_artifact(data, artifact_format, trusted, f"artifact {path}")
        signature = signature_of(model)
        schema = _renamed(schema_for(model, example, closed), feature_names)
        signature.update(n_features=len(schema.columns), feature_names=schema.names)
        stored = artifacts.place(staged, f"{sha256}.{artifact_format}")
    artifacts.store_artifact(conn, sha256, data)
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
        "input_schema": schema.to_json(),
        "libraries": libraries_of(model) or None,
    }
    model_id = conn.execute(insert(models).returning(models.c.id), row).scalar_one()
    per_row = costs.measure_at_registration(model, schema, signature["kind"] == "classifier")
    if per_row is not None:  # sizes its first bulk chunks; workers' chunks refine it
        costs.record(conn, model_id, per_row)
    return _info({"id": model_id, **row})


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
    schema = row["input_schema"]
    return ModelInfo(id=row["id"], **{k: row[k] for k in _INFO_FIELDS},
                     input_schema=None if schema is None else InputSchema.from_json(schema),
                     libraries=row["libraries"])


def _is_name(value: str) -> bool:
    return 0 < len(value) <= 50 and all(c.isalnum() or c in "-_." for c in value)


def _check_name(value: str, field: str) -> None:
    if not _is_name(value):
        raise InvalidInput(field, "use 1-50 letters, digits, '-', '_' or '.'")


def _renamed(schema: InputSchema, names: list[str] | None) -> InputSchema:
    """Names for the columns of a model fitted on an array (x0, x1, ... otherwise)."""
    if names is None:
        return schema
    if len(names) != len(schema.columns):
        raise InvalidInput("feature_names",
                           f"{len(names)} names for a model of {len(schema.columns)} features")
    if schema.frame:
        raise InvalidInput("feature_names", "the model was fitted on a DataFrame: its columns "
                                            "have names already")
    return replace(schema, columns=tuple(replace(c, name=n)
                                         for c, n in zip(schema.columns, names, strict=True)))


