"""Two versions of one model for the rollout tests, registered under a fresh name, and the
predictions each gives locally (the truth a comparison is checked against)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete

from service.core.settings import Settings
from service.models.registry import add_model
from service.store.db import model_rollouts, rollout_changes
from tests.support.tenants import Tenant, make_tenant

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass(frozen=True)
class Versions:
    """A model registered as version 1 (logistic regression) and version 2 (a one-split tree,
    which disagrees with it on a good share of iris rows), with a third taking other inputs."""

    name: str
    estimators: dict[str, Any]

    def predict(self, version: str, rows: list[list[float]]) -> list[Any]:
        return [p.item() if hasattr(p, "item") else p
                for p in self.estimators[version].predict(rows)]


@contextmanager
def registered_versions(engine: Engine, settings: Settings) -> Iterator[Versions]:
    """Versions 1 and 2 of an iris classifier under a fresh name, and a version 3 that takes
    three columns; its rollout and history are removed after (the model rows stay: SQLite
    would give a deleted model's id to the next one, and workers cache a version for good)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    iris = load_iris()
    fitted = {"1": LogisticRegression(max_iter=1000).fit(iris.data, iris.target),
              "2": DecisionTreeClassifier(max_depth=1, random_state=0)
              .fit(iris.data, iris.target),
              "3": LogisticRegression(max_iter=1000).fit(iris.data[:, :3], iris.target)}
    columns = {"1": FEATURES, "2": FEATURES, "3": FEATURES[:3]}
    with _registered(engine, settings, "ro", fitted, columns) as versions:
        yield versions


@contextmanager
def registered_regressors(engine: Engine, settings: Settings) -> Iterator[Versions]:
    """A regressor registered as version 1 (ridge) and version 2 (a shallow tree) on the
    diabetes data's first four columns."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.tree import DecisionTreeRegressor

    data = load_diabetes()
    x = data.data[:, :4]
    fitted = {"1": Ridge(alpha=0.1).fit(x, data.target),
              "2": DecisionTreeRegressor(max_depth=3, random_state=0).fit(x, data.target)}
    columns = {version: ["a", "b", "c", "d"] for version in fitted}
    with _registered(engine, settings, "rr", fitted, columns) as versions:
        yield versions


@contextmanager
def _registered(engine: Engine, settings: Settings, prefix: str, fitted: dict[str, Any],
                columns: dict[str, list[str]]) -> Iterator[Versions]:
    import joblib

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    work = Path(settings.var_dir) / "train" / name
    work.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:
        for version, estimator in fitted.items():
            path = work / f"v{version}.joblib"
            joblib.dump(estimator, path)
            add_model(conn, settings.model_dir, str(path), name, version, columns[version])
    try:
        yield Versions(name, fitted)
    finally:
        with engine.begin() as conn:
            conn.execute(delete(model_rollouts).where(model_rollouts.c.name == name))
            conn.execute(delete(rollout_changes).where(rollout_changes.c.name == name))


@contextmanager
def as_operator(engine: Engine, api_url: str) -> Iterator[Tenant]:
    """A key of a fresh `ops-` tenant with the operator scope, as `predq keys create` makes
    it."""
    made = make_tenant(engine, api_url, ("read", "operator"), name=f"ops-{uuid.uuid4().hex[:6]}")
    try:
        yield next(made)
    finally:
        for _ in made:
            pass


def iris_rows(n: int, seed: int) -> list[list[float]]:
    """`n` iris rows, jittered so that jobs differ."""
    import numpy as np
    from sklearn.datasets import load_iris

    data = load_iris().data
    rng = np.random.default_rng(seed)
    picked = data[rng.integers(0, len(data), n)] + rng.normal(0, 0.3, (n, 4))
    return [[round(float(v), 3) for v in row] for row in picked]


def set_rollout(ops: Tenant, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """PUT the rollout of `name` with an operator's key; 200 expected."""
    answer = ops.http.put(f"{ops.base_url}/v1/models/{name}/rollout", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def accepted(tenant: Tenant, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """POST a JSON job (with an Idempotency-Key if given): its 202 (or a replay's 200) body."""
    headers = {"Idempotency-Key": key} if key else {}
    answer = tenant.post("/v1/jobs", json=body, headers=headers)
    assert answer.status_code in (200, 202), answer.text
    return answer.json()  # type: ignore[no-any-return]


def shadow_of(ops: Tenant, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The job's shadow answer once the worker has stored it (all its chunks', for a bulk
    job): shadows run at the lowest priority, after their jobs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shadow = ops.get(f"/v1/jobs/{job_id}/shadow").json()["shadow"]
        if shadow is not None and shadow["status"] != "pending":
            return shadow  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no shadow answer for {job_id} after {timeout}s")
