"""Task registration: the Celery entry points, each a thin translation to a domain call."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Collection
from typing import Any

import redis
from celery import Celery, signals
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from sqlalchemy.exc import OperationalError

from service.core.broker import celery_publisher
from service.core.messaging import (
    CHUNK_TASK,
    DELIVER_TASK,
    PREDICT_QUEUES,
    PREDICT_TASK,
    RECONCILE_TASK,
    SCHEDULE_TASK,
    WEBHOOK_QUEUE,
    Publisher,
    publish_or_defer,
)
from service.core.settings import Settings
from service.jobs.submit import Submitter, make_submitter
from service.ops import heartbeats, logs, metrics
from service.store.db import make_engine
from service.webhooks import events as webhook_events
from workers.batching import Runner
from workers.bulkrun import ChunkRunner
from workers.maintenance import RetentionPace, reconcile
from workers.webhooks import Deliverer

log = logging.getLogger(__name__)
_runner: tuple[int, Runner] | None = None
_deliverer: tuple[int, Deliverer] | None = None
_submitter: tuple[int, Submitter] | None = None


def deliverer(settings: Settings) -> Deliverer:
    """One Deliverer per process (thread pools share it: the engine and sender are safe)."""
    global _deliverer
    if _deliverer is None or _deliverer[0] != os.getpid():
        _deliverer = (os.getpid(), Deliverer(make_engine(settings.database_url,
                                                            **settings.pool_options()), settings))
    return _deliverer[1]


def runner(settings: Settings, publish: Publisher | None = None,
           ) -> Runner:
    """One Runner per process, made after fork: engines and sockets must not cross a fork."""
    global _runner
    if _runner is None or _runner[0] != os.getpid():
        # A pool process runs one batch at a time: a small pool is enough (SQLite has none).
        small = {} if settings.database_url.startswith("sqlite") else {"pool_size": 2,
                                                                          "max_overflow": 2}
        engine = make_engine(settings.database_url, **small)
        announcer = redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                         socket_connect_timeout=2)
        made = Runner(engine, settings.model_cache_size, settings.lease_seconds,
                      settings.max_attempts, announcer, publish,
                      settings.webhook_max_inline_bytes, tally(announcer),
                      model_dir=settings.model_dir, data_root=settings.data_root)
        if _runner is not None:  # the main process's, from before the fork (preload_main)
            made.adopt(_runner[1])
        _runner = (os.getpid(), made)
    if publish is not None:  # the warm-up made it before the app's publisher was at hand
        _runner[1].publish = publish
    return _runner[1]


def submitter(settings: Settings, publish: Publisher) -> Submitter:
    """The process's Submitter, for schedules: admitted and charged like any upload."""
    global _submitter
    if _submitter is None or _submitter[0] != os.getpid():
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
        engine = runner(settings, publish).engine
        _submitter = (os.getpid(), make_submitter(settings, engine, client, publish))
    return _submitter[1]


def preload_main(sender: Any, **_: Any) -> None:
    """At worker_init, in a prediction worker's main process, before the pool forks: load the
    latest models once. Every pool process starts with them (their memory shared until
    written), and the worker says it is ready only once they are loaded: its first job does
    not wait for a pool process to load them. No connection crosses the fork."""
    settings: Settings = sender.app.conf.predq_settings
    if not set(sender.app.amqp.queues.consume_from) & set(PREDICT_QUEUES):
        return  # a deliverer or a maintenance worker predicts nothing
    main = runner(settings)
    try:
        loaded = main.preload(settings.model_cache_size)
        log.info("preloaded %d model versions before starting the pool", loaded)
    except Exception:  # noqa: BLE001 - a cold start is slower, not broken
        log.exception("model preload failed; models will load on first use")
    finally:
        main.engine.dispose()
        if main.announcer is not None:
            main.announcer.close()


def warm_up(settings: Settings) -> None:
    """In a fresh pool process: load the latest models the main process did not (all of them
    if its preload failed), so the first job does not pay for it."""
    try:
        loaded = runner(settings).preload(settings.model_cache_size)
        log.info("pool process %d: %d model versions loaded here, the rest from the main "
                 "process", os.getpid(), loaded)
    except Exception:  # noqa: BLE001 - a cold start is slower, not broken
        log.exception("model preload failed; models will load on first use")


REQUEUE = "requeue"  # a batch returns this when the result store stayed unreachable


class RequeueingBatches(Batches):
    """celery-batches, with two changes for predq.

    When to run a batch: at once if a pool process is free, else when one frees up, with
    everything that arrived meanwhile (or when `flush_every` messages are waiting). A lone
    request waits for no timer, and under load batches grow to fit the work, as the API's group
    commit does. The timer (`flush_interval`) is only the fallback.

    Acknowledgement: celery-batches acknowledges every message of a batch when the batch
    returns; this one hands them back to Redis instead when the batch says the database was
    unreachable, so a database outage never consumes a message.
    """

    abstract = True
    #: Batches sent to the pool and not yet returned, and how many the pool runs at once.
    _in_flight = 0
    _capacity = 1
    _holding_since: float | None = None
    #: Hold messages back at most this long for a busy pool (bounds the damage of a lost count).
    max_hold = 1.0

    def Strategy(self, task: Batches, app: Celery, consumer: Any) -> Any:  # noqa: N802
        # celery-batches 0.11 arms its flush timer once, on the task instance; upstream issue
        # #107 (fixed after 0.11) shows a consumer rebuilt after a reconnect keeping a dead
        # timer, so the buffer flushes only every flush_every messages. Strategy runs at every
        # consumer (re)start: forget the old timer so it is re-armed, as the upstream fix does.
        # (Seen with RabbitMQ upstream; not reproduced here with Redis, kept as a safeguard.)
        tref: Any = getattr(self, "_tref", None)
        if tref is not None:
            with contextlib.suppress(Exception):
                tref.cancel()
            self._tref = None
        self._in_flight, self._holding_since = 0, None
        self._capacity = max(1, int(getattr(consumer.pool, "num_processes", 1) or 1))
        buffer_message = super().Strategy(task, app, consumer)

        def on_message(*args: Any, **kwargs: Any) -> None:
            buffer_message(*args, **kwargs)
            if self._in_flight < self._capacity:
                self._do_flush()

        return on_message

    def _do_flush(self) -> None:
        if self._in_flight >= self._capacity and self._buffer.qsize() < self.flush_every:
            now = time.monotonic()
            if self._holding_since is None:
                self._holding_since = now
            if now - self._holding_since < self.max_hold:
                return  # every process is busy: let the batch grow until one is free
        self._holding_since = None
        super()._do_flush()

    def flush(self, requests: Collection[Request]) -> Any:
        serializable = ([SimpleRequest.from_request(r) for r in requests],)

        def on_return(result: Any) -> None:
            self._in_flight = max(0, self._in_flight - 1)
            for req in requests:
                if result == REQUEUE:
                    req.reject(requeue=True)
                else:
                    req.acknowledge()
            self._do_flush()  # a process is free: run what arrived meanwhile

        def on_error(_exc: Any) -> None:  # the batch's process died; Celery handles the acks
            self._in_flight = max(0, self._in_flight - 1)

        self._in_flight += 1
        return self._pool.apply_async(apply_batches_task, (self, serializable, 0, None),
                                      callback=on_return, error_callback=on_error)


_identity: heartbeats.Identity | None = None  # set in the main process, inherited by the pool


def identify(sender: Any, **_: Any) -> None:
    """At worker_init (main process, before the pool forks): what this worker is, so that its
    heartbeat and its pool processes' counts name the same record."""
    global _identity
    _identity = heartbeats.Identity(
        host=socket.gethostname(), pid=os.getpid(), node=str(getattr(sender, "hostname", "")),
        queues=tuple(sorted(sender.app.amqp.queues.consume_from)),
        concurrency=int(getattr(sender, "concurrency", 0) or 0))


def tally(client: redis.Redis) -> heartbeats.Tally | None:
    """Where a pool process counts what it finished (None outside a worker)."""
    return None if _identity is None else heartbeats.Tally(client, _identity.name)


def start_heartbeat(settings: Settings, interval: float = 10.0) -> None:
    """The worker's main process tells Redis it is alive and what it is, for health and the
    dashboard."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    identity = _identity or heartbeats.Identity(socket.gethostname(), os.getpid())

    def beat() -> None:
        while True:
            try:
                heartbeats.heartbeat(client, identity.name, identity)
            except redis.RedisError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            time.sleep(interval)

    threading.Thread(target=beat, name="predq-heartbeat", daemon=True).start()

    def gone(**_: Any) -> None:
        with contextlib.suppress(redis.RedisError):
            heartbeats.forget(client, identity.name)

    signals.worker_shutdown.connect(gone, weak=False)


def register(app: Celery) -> None:
    settings: Settings = app.conf.predq_settings
    # Our handler and format instead of Celery's (a receiver here stops Celery configuring).
    signals.setup_logging.connect(
        lambda **_: logs.configure(settings.log_level, settings.log_format), weak=False)
    signals.worker_init.connect(identify, weak=False)
    signals.worker_init.connect(preload_main, weak=False)  # after identify: the tally's name
    signals.worker_process_init.connect(lambda **_: warm_up(settings), weak=False)
    signals.worker_ready.connect(lambda **_: start_heartbeat(settings), weak=False)
    signals.worker_process_shutdown.connect(lambda pid, **_: metrics.process_exited(pid),
                                            weak=False)

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
        try:
            return len(runner(settings, celery_publisher(app)).run(ids))
        except OperationalError as exc:  # still down after the runner's retries with back-off
            log.error("result store unreachable (%s); handing %d messages back to the queue",
                      exc.orig, len(requests))
            time.sleep(1.0)  # don't spin on a dead database: the messages come straight back
            return REQUEUE

    @app.task(name=CHUNK_TASK, acks_late=True, ignore_result=True)
    def predict_chunks(chunk_ids: list[str]) -> int:
        """Bulk jobs: each message names one chunk (`job-id/seq`); its result is committed
        alone, and the job's next chunk is sent, so a bulk job holds only a few messages."""
        run = runner(settings, celery_publisher(app))
        return ChunkRunner(run).run(_ids([chunk_ids]), celery_publisher(app))

    @app.task(name=DELIVER_TASK, acks_late=True, ignore_result=True)
    def deliver_events(event_ids: list[str]) -> None:
        """One attempt per due event; a retry due within a minute comes back as a delayed
        message, later ones from the reconciler's sweep of the outbox."""
        send = celery_publisher(app)
        for event_id in _ids([event_ids]):
            delay = deliverer(settings).deliver(event_id)
            if delay is not None and delay <= 60 and publish_or_defer(
                    send, DELIVER_TASK, WEBHOOK_QUEUE, [event_id], delay):
                with deliverer(settings).engine.begin() as conn:
                        webhook_events.mark_published(conn, event_id)

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
        publish = celery_publisher(app)
        return schedules.run_due(submitter(settings, publish), settings, declared)

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile_jobs() -> dict[str, int]:
        """One run at a time across every worker: a Redis lock, in case two beats run."""
        client = redis.Redis.from_url(settings.redis_url)
        lock = client.lock("predq:reconcile:lock", timeout=max(60, 4 * settings.reconcile_interval))
        if not lock.acquire(blocking=False):
            log.info("reconciler already running elsewhere; skipped")
            return {}
        try:
            publish = celery_publisher(app)
            pace = RetentionPace(client)
            figures = reconcile(runner(settings, publish).engine, settings, publish,
                                idle_queues=idle_queues(client), sweep_retention=pace.due())
            pace.swept(figures["deleted"])
            return figures
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()


def idle_queues(client: redis.Redis) -> set[str]:
    """The queues holding no message in Redis right now (unknown if Redis fails: none)."""
    watched = (*PREDICT_QUEUES, WEBHOOK_QUEUE)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in watched:
            pipe.llen(queue)
        lengths = pipe.execute()
    except redis.RedisError:
        return set()
    return {queue for queue, n in zip(watched, lengths, strict=True) if n == 0}


def _ids(args: Any) -> list[str]:
    # Messages come from our own API, but the broker is a trust boundary: check the shape.
    if len(args) == 1 and isinstance(args[0], list) and all(isinstance(i, str) for i in args[0]):
        return args[0]
    log.error("dropping malformed predict message with args %.200r", args)
    return []
