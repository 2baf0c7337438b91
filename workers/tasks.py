"""The Celery entry points: each task translates a message to a domain call on this process's
composition root (`workers.composition`), and back."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery
from celery_batches import SimpleRequest
from sqlalchemy.exc import OperationalError

from service.core.messaging import (
    CHUNK_TASK,
    DELIVER_TASK,
    PREDICT_TASK,
    RECONCILE_TASK,
    SCHEDULE_TASK,
    SHADOW_TASK,
)
from service.core.settings import Settings
from workers import maintenance, signals
from workers.batches import REQUEUE, RequeueingBatches
from workers.bulkrun import ChunkRunner
from workers.composition import root
from workers.shadows import ShadowRunner

log = logging.getLogger(__name__)


def register(app: Celery) -> None:
    """Connect the signals and register every task on `app`."""
    settings: Settings = app.conf.predq_settings
    signals.connect(app, settings)

    @app.task(
        base=RequeueingBatches,
        name=PREDICT_TASK,
        flush_every=settings.batch_flush_every,
        flush_interval=settings.batch_flush_interval,
        acks_late=True,
    )
    def predict_jobs(requests: list[SimpleRequest]) -> int | str:
        """Each message carries the ids of one submit group; a batch is many messages."""
        ids = [job_id for request in requests for job_id in _ids(request.args)]
        parts = root(settings, app)
        try:
            # Workers are shared by every tenant: what they run is told without job ids.
            with parts.activity.busy(f"{len(ids)} job{'s' if len(ids) != 1 else ''}"):
                return len(parts.runner.run(ids))
        except OperationalError as exc:  # still down after the runner's retries with back-off
            log.error("result store unreachable (%s); handing %d messages back to the queue",
                      exc.orig, len(requests))
            time.sleep(1.0)  # don't spin on a dead database: the messages come straight back
            return REQUEUE

    @app.task(name=CHUNK_TASK, acks_late=True, ignore_result=True)
    def predict_chunks(chunk_ids: list[str]) -> int:
        """Bulk jobs: each message names one chunk (`job-id/seq`); its result is committed
        alone, and the job's next chunk is sent, so a bulk job holds only a few messages."""
        parts, ids = root(settings, app), _ids([chunk_ids])
        with parts.activity.busy(f"{len(ids)} bulk chunk{'s' if len(ids) != 1 else ''}"):
            return ChunkRunner(parts.runner).run(ids)

    @app.task(name=SHADOW_TASK, acks_late=True, ignore_result=True)
    def run_shadows(job_ids: list[str]) -> int:
        """Ended jobs of a rollout with a shadow: their rows on the shadow version, the
        answers stored beside them (the lowest priority of the worker's queues)."""
        parts, ids = root(settings, app), _ids([job_ids])
        with parts.activity.busy(f"{len(ids)} shadow run{'s' if len(ids) != 1 else ''}"):
            return ShadowRunner(parts.runner).run(ids)

    @app.task(name=DELIVER_TASK, acks_late=True, ignore_result=True)
    def deliver_events(event_ids: list[str]) -> None:
        """One attempt per due event; a retry due within a minute comes back as a delayed
        message, later ones from the reconciler's sweep of the outbox."""
        parts = root(settings, app)
        parts.deliverer.deliver_all(_ids([event_ids]), parts.publish)

    @app.task(name=SCHEDULE_TASK, ignore_result=True)
    def run_schedules(path: str) -> list[str]:
        """Submit the scheduled bulk forecasts of the file `predq beat` names that are due
        (each exactly once, by its idempotency key) and write the outputs of finished ones."""
        from service.bulk import schedules

        try:
            declared = schedules.load(path)
        except schedules.ScheduleError as exc:
            log.error("schedules not run: %s", exc.message)
            return []
        return schedules.run_due(root(settings, app).submitter, settings, declared)

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile_jobs() -> dict[str, int]:
        """One run at a time across every worker (a Redis lock, in case two beats run)."""
        parts = root(settings, app)
        return maintenance.reconcile_once(parts.ends, parts.redis, settings)


def _ids(args: Any) -> list[str]:
    # Messages come from our own API, but the broker is a trust boundary: check the shape.
    if len(args) == 1 and isinstance(args[0], list) and all(isinstance(i, str) for i in args[0]):
        return args[0]
    log.error("dropping malformed predict message with args %.200r", args)
    return []
