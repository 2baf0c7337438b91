"""The producer side of Celery: the one app configuration that both the API (to publish) and
the workers (to consume) start from, and the publisher built on it. Imports no worker code:
the API process never loads celery-batches or the model runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from service.core.messaging import (
    CHUNK_QUEUE,
    CHUNK_TASK,
    DELIVER_TASK,
    MAINTENANCE_QUEUE,
    NORMAL,
    PREDICT_TASK,
    QUEUES,
    RECONCILE_TASK,
    SCHEDULE_TASK,
    SHADOW_QUEUE,
    SHADOW_TASK,
    WEBHOOK_QUEUE,
    Publisher,
)
from service.core.redisurl import sentinels, tcp_keepalive
from service.core.settings import Settings


def make_producer(settings: Settings) -> Celery:
    """A Celery app with JSON-only messages, late acks and predq's queues."""
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
        task_routes={PREDICT_TASK: {"queue": NORMAL}, CHUNK_TASK: {"queue": CHUNK_QUEUE},
                     DELIVER_TASK: {"queue": WEBHOOK_QUEUE},
                     RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
                     SCHEDULE_TASK: {"queue": MAINTENANCE_QUEUE},
                     SHADOW_TASK: {"queue": SHADOW_QUEUE}},
        broker_transport_options=transport_options(settings),
        # Celery reads the visibility timeout in three places (its Redis caveats): predq has
        # no result backend, but a second value anywhere would be a second truth.
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        visibility_timeout=settings.visibility_timeout,
        broker_connection_retry_on_startup=True,
        # A Redis master demoted under a worker (a Sentinel switch-over) answers READONLY to a
        # write and UNBLOCKED to a waiting BRPOP: channel errors, which end the worker unless
        # they are retried like a lost connection (celery#7946). Reconnecting asks Sentinel.
        broker_channel_error_retry=True,
        task_send_sent_event=False,
        broker_heartbeat=0,
    )
    app.conf.predq_settings = settings
    return app


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's Redis transport options: timeouts, priority order, and for a Sentinel group its
    name and how to reach its sentinels; TCP keepalives on every network connection."""
    options: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        # BRPOP the queues in the order the worker lists them (highest priority first),
        # instead of kombu's default round robin, which would let bulk work take turns.
        "queue_order_strategy": "priority",
    }
    group = sentinels(settings.redis_url)
    if group is not None:
        options.update(master_name=group.service, sentinel_kwargs=group.sentinel_kwargs())
    if not settings.redis_url.startswith("unix://"):  # kombu refuses them for a socket
        options.update(tcp_keepalive())
    return options


def celery_publisher(app: Celery) -> Publisher:
    """Send one message of `task` carrying `ids` to `queue`; a dead broker fails within ~1 s."""
    def publish(task: str, queue: str, ids: Sequence[str],
                countdown: float | None = None) -> None:
        app.send_task(task, args=[list(ids)], queue=queue, countdown=countdown, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0,
                                    "interval_step": 0.3, "interval_max": 0.5})
    return publish
