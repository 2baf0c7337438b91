"""Which optional model libraries (LightGBM, XGBoost) a fitted estimator holds, with the
versions running: recorded at registration and compared at load, as scikit-learn's and
numpy's are, since a model unpickled by another version of its library may predict otherwise."""

from __future__ import annotations

from importlib import metadata
from typing import Any

OPTIONAL = ("lightgbm", "xgboost")


def libraries_of(estimator: Any) -> dict[str, str]:
    """{library: version running} for each optional library whose estimators `estimator`
    contains (Pipeline steps, ColumnTransformer branches, nested parameters)."""
    found: dict[str, str] = {}
    for part in _parts(estimator, depth=0):
        root = type(part).__module__.split(".")[0]
        if root in OPTIONAL and root not in found:
            found[root] = _version(root)
    return found


def _parts(estimator: Any, depth: int) -> list[Any]:
    if depth > 20 or estimator is None or isinstance(estimator, str):
        return []
    parts = [estimator]
    children: list[Any] = []
    for attr in ("steps", "transformers_", "transformers"):
        for item in getattr(estimator, attr, None) or []:
            if isinstance(item, tuple) and len(item) >= 2:
                children.append(item[1])
    for name in ("estimator", "base_estimator", "final_estimator_", "estimators_"):
        value = getattr(estimator, name, None)
        children.extend(value if isinstance(value, list) else [value])
    for child in children:
        if hasattr(child, "fit"):
            parts.extend(_parts(child, depth + 1))
    return parts


def running_version(library: str) -> str:
    """The version of `library` this process runs (ImportError if it has none)."""
    return _version(library)


def _version(library: str) -> str:
    module = __import__(library)
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    return metadata.version("xgboost-cpu" if library == "xgboost" else library)
