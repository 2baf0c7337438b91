"""The Celery app: JSON-only messages, late acks, one queue per kind of work."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from service.config import Settings
from service.priorities import NORMAL, PREDICT_QUEUES

PREDICT_TASK = "predq.predict"
CHUNK_TASK = "predq.predict_chunks"  # bulk jobs: `job-id/seq` of chunks, one per message
RECONCILE_TASK = "predq.reconcile"
SCHEDULE_TASK = "predq.schedules"
DELIVER_TASK = "predq.deliver"
WEBHOOK_QUEUE = "webhooks"
QUEUES = (*PREDICT_QUEUES, WEBHOOK_QUEUE, "maintenance")


def make_celery(settings: Settings | None = None) -> Celery:
    """Build the Celery app that both the API (to publish) and the workers (to consume) use."""
    settings = settings or Settings.from_env()
    app = Celery("predq", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # pickle is refused before anything is decoded: dead-lettered
        result_serializer="json",
        task_ignore_result=True,  # results live in SQL, not in a Celery backend
        task_acks_late=True,  # ack after the result is committed
        task_reject_on_worker_lost=True,
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        task_default_queue=NORMAL,
        task_default_exchange=NORMAL,
        task_default_routing_key=NORMAL,
        task_routes={PREDICT_TASK: {"queue": NORMAL}, DELIVER_TASK: {"queue": WEBHOOK_QUEUE},
                     RECONCILE_TASK: {"queue": "maintenance"},
                     SCHEDULE_TASK: {"queue": "maintenance"}},
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval,
                "options": {"queue": "maintenance", "expires": settings.reconcile_interval},
            },
            **({"schedules": {  # the beat's file: workers read it where the beat says
                "task": SCHEDULE_TASK,
                "args": (settings.schedules,),
                "schedule": settings.schedule_interval,
                "options": {"queue": "maintenance", "expires": settings.schedule_interval},
            }} if settings.schedules else {}),
        },
        task_time_limit=settings.task_time_limit,
        task_annotations={SCHEDULE_TASK: {"time_limit": 3600}},  # reads a whole input file
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "socket_connect_timeout": 2,
            "socket_timeout": 10,
            # BRPOP the queues in the order the worker lists them (highest priority first),
            # instead of kombu's default round robin, which would let bulk work take turns.
            "queue_order_strategy": "priority",
        },
        broker_connection_retry_on_startup=True,
        # celery-batches buffers in the consumer: prefetch must cover a full batch per process.
        worker_prefetch_multiplier=max(4, settings.batch_flush_every),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        # Keeps what the worker refuses (disallowed content, undecodable, not our tasks' shape)
        # in Redis for `predq dead-letters`, and acknowledges it, instead of dropping it.
        worker_consumer="workers.deadletter:DeadLetteringConsumer",
        broker_heartbeat=0,
    )
    app.conf.predq_settings = settings
    return app
