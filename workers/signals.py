"""What a worker does at Celery's signals: set up logging, say what it is, load the models
before the pool forks, warm a fresh pool process, and beat its heartbeat."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import asdict
from typing import Any

import redis
from celery import Celery, signals

from service.core.messaging import CHUNK_LANES, CHUNK_QUEUE, CHUNK_SHADOW_QUEUE, PREDICT_QUEUES
from service.core.settings import Settings
from service.ops import heartbeats, logs, metrics, poolstate
from service.store.redisclient import redis_client
from workers import composition

log = logging.getLogger(__name__)


def connect(app: Celery, settings: Settings) -> None:
    """Wire predq's receivers to the worker's signals."""
    # Our handler and format instead of Celery's (a receiver here stops Celery configuring).
    signals.setup_logging.connect(
        lambda **_: logs.configure(settings.log_level, settings.log_format), weak=False)
    signals.worker_init.connect(identify, weak=False)
    signals.worker_init.connect(yield_cpu, weak=False)  # before the pool forks: it inherits
    signals.worker_init.connect(lambda **_: limit_threads(settings), weak=False)
    signals.worker_init.connect(preload_main, weak=False)  # after identify: the tally's name
    signals.worker_process_init.connect(lambda **_: limit_threads(settings), weak=False)
    signals.worker_process_init.connect(lambda **_: warm_up(settings, app), weak=False)
    signals.worker_ready.connect(lambda **_: start_heartbeat(settings), weak=False)
    signals.worker_process_shutdown.connect(lambda pid, **_: metrics.process_exited(pid),
                                            weak=False)


def identify(sender: Any, **_: Any) -> None:
    """At worker_init (main process, before the pool forks): what this worker is, so that its
    heartbeat and its pool processes' counts name the same record."""
    composition.identity = heartbeats.Identity(
        host=socket.gethostname(), pid=os.getpid(), node=str(getattr(sender, "hostname", "")),
        queues=tuple(sorted(sender.app.amqp.queues.consume_from)),
        concurrency=int(getattr(sender, "concurrency", 0) or 0))


def yield_cpu(sender: Any, **_: Any) -> None:
    """A worker of bulk chunks only runs at a lower CPU priority (`bulk_nice`), its pool
    processes too: it has the cores while single jobs leave them, and gives them up within a
    scheduler tick when single jobs come (nice 10 weighs a tenth of nice 0 in Linux's CFS)."""
    settings: Settings = sender.app.conf.predq_settings
    consumed = set(sender.app.amqp.queues.consume_from)
    if CHUNK_QUEUE in consumed <= {*CHUNK_LANES, CHUNK_SHADOW_QUEUE} and settings.bulk_nice > 0:
        os.nice(settings.bulk_nice)


def limit_threads(settings: Settings) -> None:
    """At worker_init (the main process preloads models) and in each pool process: the BLAS
    and OpenMP threads a predict may use (`model_threads`; a pool process per core is the
    parallelism already)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if settings.model_threads > 0:
        threadpool_limits(limits=settings.model_threads)
    pools = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info())
    log.info("process %d: model threads: %s", os.getpid(), pools or "no thread pool loaded")


def preload_main(sender: Any, **_: Any) -> None:
    """At worker_init, in a prediction worker's main process, before the pool forks: load the
    latest models once. Every pool process starts with them (their memory shared until
    written), and the worker says it is ready only once they are loaded: its first job does
    not wait for a pool process to load them. No connection crosses the fork."""
    settings: Settings = sender.app.conf.predq_settings
    if not set(sender.app.amqp.queues.consume_from) & {*PREDICT_QUEUES, CHUNK_QUEUE}:
        return  # a deliverer or a maintenance worker predicts nothing
    main = composition.root(settings, sender.app)
    try:
        loaded = main.runner.preload(settings.model_cache_size)
        log.info("preloaded %d model versions before starting the pool", loaded)
    except Exception:  # noqa: BLE001 - a cold start is slower, not broken
        log.exception("model preload failed; models will load on first use")
    finally:
        main.close()


def warm_up(settings: Settings, app: Celery) -> None:
    """In a fresh pool process: load the latest models the main process did not (all of them
    if its preload failed), so the first job does not pay for it."""
    try:
        loaded = composition.root(settings, app).runner.preload(settings.model_cache_size)
        log.info("pool process %d: %d model versions loaded here, the rest from the main "
                 "process", os.getpid(), loaded)
    except Exception:  # noqa: BLE001 - a cold start is slower, not broken
        log.exception("model preload failed; models will load on first use")


def start_heartbeat(settings: Settings, interval: float = 10.0) -> None:
    """The worker's main process tells Redis it is alive and what it is, for health and the
    dashboard."""
    client = redis_client(settings.redis_url)
    identity = composition.identity or heartbeats.Identity(socket.gethostname(), os.getpid())
    meter = poolstate.Meter()

    def beat() -> None:
        while True:
            try:
                usage = [asdict(u) for u in meter.measure()]
                heartbeats.heartbeat(client, identity.name, identity, usage)
            except redis.RedisError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            time.sleep(interval)

    threading.Thread(target=beat, name="predq-heartbeat", daemon=True).start()

    def gone(**_: Any) -> None:
        with contextlib.suppress(redis.RedisError):
            heartbeats.forget(client, identity.name)

    signals.worker_shutdown.connect(gone, weak=False)
