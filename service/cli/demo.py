"""Demo models, trained on the spot (no download): `iris` and `diabetes` from datasets
scikit-learn ships, and `churn`, a typed pipeline (strings, a nullable number, integers, a
boolean) on data predq generates."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection

from service.core.errors import ModelNotFound
from service.models import registry
from service.models.demo_typed import train_churn

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def train_demo_models(directory: str | Path) -> dict[str, tuple[Path, list[str]]]:
    """Train `iris` (classifier) and `diabetes` (regressor); return artifact paths and names."""
    import joblib
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LogisticRegression, Ridge

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    iris = load_iris()
    classifier = LogisticRegression(max_iter=1000).fit(
        iris.data, iris.target_names[iris.target]
    )
    diabetes = load_diabetes()
    regressor = Ridge(alpha=0.1).fit(diabetes.data, diabetes.target)
    joblib.dump(classifier, out / "iris.joblib")
    joblib.dump(regressor, out / "diabetes.joblib")
    return {
        "iris": (out / "iris.joblib", IRIS_FEATURES),
        "diabetes": (out / "diabetes.joblib", list(diabetes.feature_names)),
    }


def register_demo_models(conn: Connection, model_dir: str, work_dir: str | Path) -> list[str]:
    """Register the demo models as version 1 unless they already exist; return what was added."""
    added = []
    for name, (path, features) in train_demo_models(work_dir).items():
        if _known(conn, name):
            continue
        registry.add_model(conn, model_dir, str(path), name, "1", feature_names=features)
        added.append(name)
    if not _known(conn, "churn"):
        path, example = train_churn(Path(work_dir) / "churn.joblib")
        registry.add_model(conn, model_dir, str(path), "churn", "1", example=example)
        added.append("churn")
    return added


def _known(conn: Connection, name: str) -> bool:
    try:
        registry.resolve(conn, name)
    except ModelNotFound:
        return False
    return True
