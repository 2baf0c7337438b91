"""The worker's Celery app: the producer configuration (service.core.broker) plus what only
consumers need: the beat schedule, time limits, prefetch and the dead-lettering consumer."""

from __future__ import annotations

from celery import Celery

from service.core.broker import make_producer
from service.core.messaging import MAINTENANCE_QUEUE, RECONCILE_TASK, SCHEDULE_TASK
from service.core.settings import Settings


def make_celery(settings: Settings | None = None) -> Celery:
    """Build the Celery app the workers, the deliverer and beat run."""
    settings = settings or Settings.from_env()
    app = make_producer(settings)
    app.conf.update(
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.reconcile_interval},
            },
            **({"schedules": {  # the beat's file: workers read it where the beat says
                "task": SCHEDULE_TASK,
                "args": (settings.schedules,),
                "schedule": settings.schedule_interval,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.schedule_interval},
            }} if settings.schedules else {}),
        },
        task_time_limit=settings.task_time_limit,
        task_annotations={SCHEDULE_TASK: {"time_limit": 3600}},  # reads a whole input file
        # celery-batches buffers in the consumer: prefetch must cover a full batch per process.
        worker_prefetch_multiplier=max(4, settings.batch_flush_every),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
        # Keeps what the worker refuses (disallowed content, undecodable, not our tasks' shape)
        # in Redis for `predq dead-letters`, and acknowledges it, instead of dropping it.
        worker_consumer="workers.deadletter:DeadLetteringConsumer",
    )
    return app
