"""Baseline Celery app: one task per single-row prediction, result INSERTed into PostgreSQL."""

from __future__ import annotations

import os
from typing import Any

import joblib
import numpy as np
from celery import Celery
from celery.signals import worker_process_init
from sqlalchemy import Engine, create_engine, text

REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/14")
DATABASE_URL = os.environ.get(
    "BASELINE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

app = Celery("baseline", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,
    worker_concurrency=2,
    broker_connection_retry_on_startup=True,
)

_model: Any = None
_engine: Engine | None = None

INSERT_SQL = text(
    "INSERT INTO baseline_results (id, prediction, submitted_at) "
    "VALUES (:id, :prediction, to_timestamp(:submitted_at))"
)


def get_model() -> Any:
    """The model, loaded once per worker process from BASELINE_MODEL_PATH."""
    global _model
    if _model is None:
        _model = joblib.load(os.environ["BASELINE_MODEL_PATH"])
    return _model


def get_engine() -> Engine:
    """SQLAlchemy engine, created lazily in each worker process (after fork)."""
    global _engine
    if _engine is None:
        _engine = create_engine(DATABASE_URL, pool_size=1, pool_pre_ping=False)
    return _engine


@worker_process_init.connect
def _load_on_start(**_: Any) -> None:
    """Load the model when each prefork child starts, not on its first task."""
    get_model()


@app.task(bind=True, name="baseline.predict", acks_late=True)
def predict(self: Any, row: list[float], submitted_at: float) -> None:
    """Predict one row and store the result under this task's id."""
    value = float(get_model().predict(np.asarray([row], dtype=np.float64))[0])
    with get_engine().begin() as conn:
        conn.execute(
            INSERT_SQL, {"id": self.request.id, "prediction": value, "submitted_at": submitted_at}
        )
