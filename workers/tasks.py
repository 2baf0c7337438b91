"""Task registration: the Celery entry points, each a thin translation to a domain call."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals
from celery_batches import Batches, SimpleRequest

from service.config import Settings
from service.db import make_engine
from workers.app import PREDICT_TASK
from workers.batching import Runner

log = logging.getLogger(__name__)
_runner: tuple[int, Runner] | None = None


def runner(settings: Settings) -> Runner:
    """One Runner per process, made after fork: engines and sockets must not cross a fork."""
    global _runner
    if _runner is None or _runner[0] != os.getpid():
        engine = make_engine(settings.database_url, pool_size=2, max_overflow=2) \
            if not settings.database_url.startswith("sqlite") \
            else make_engine(settings.database_url)
        _runner = (os.getpid(), Runner(engine, settings.model_cache_size))
    return _runner[1]


def warm_up(settings: Settings) -> None:
    """Load the latest models in a fresh pool process, so the first job does not pay for it."""
    try:
        runner(settings).preload(settings.model_cache_size)
    except Exception:  # noqa: BLE001 - a cold start is slower, not broken
        log.exception("model preload failed; models will load on first use")


def register(app: Celery) -> None:
    settings: Settings = app.conf.predq_settings
    signals.worker_process_init.connect(lambda **_: warm_up(settings), weak=False)

    @app.task(
        base=Batches,
        name=PREDICT_TASK,
        flush_every=settings.batch_flush_every,
        flush_interval=settings.batch_flush_interval,
        acks_late=True,
    )
    def predict_jobs(requests: list[SimpleRequest]) -> int:
        """Each message carries the ids of one submit group; a batch is many messages."""
        ids = [job_id for request in requests for job_id in _ids(request.args)]
        return len(runner(settings).run(ids))


def _ids(args: Any) -> list[str]:
    # Messages come from our own API, but the broker is a trust boundary: check the shape.
    if len(args) == 1 and isinstance(args[0], list) and all(isinstance(i, str) for i in args[0]):
        return args[0]
    log.error("dropping malformed predict message with args %.200r", args)
    return []
