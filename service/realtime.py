"""What Redis carries besides the queues: the "job done" wake-ups, the prediction cache, the
drained-jobs counters behind Retry-After, and worker heartbeats.

Every one of these is an optimisation over SQL, never the truth: a lost wake-up makes a
synchronous caller re-read SQL at its timeout, a lost cache entry costs a prediction, a lost
counter a less accurate Retry-After.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence

import numpy as np
import redis

from service import metrics
from service.registry import ModelInfo

log = logging.getLogger(__name__)

DONE_CHANNEL = "predq:done"
DRAINED = "predq:drained"  # hash: queue -> jobs taken off it, ever
WORKERS = "predq:workers"  # sorted set: worker name -> last heartbeat (unix time)
WORKER_TTL = 30.0


def cache_key(info: ModelInfo, row: np.ndarray) -> str:
    """Model version, artifact sha256 and the exact float64 bytes of the row: a new version,
    or a re-registered artifact, never reads another's entries."""
    digest = hashlib.blake2b(np.ascontiguousarray(row, dtype="<f8").tobytes(), digest_size=16)
    return f"predq:cache:{info.id}:{info.sha256}:{digest.hexdigest()}"


def cached_result(client: redis.Redis, info: ModelInfo, rows: np.ndarray) -> str | None:
    """The stored result JSON of a single-row input of a cached model, if Redis has it."""
    if not info.cache_ttl or len(rows) != 1:
        return None
    try:
        value = client.get(cache_key(info, rows[0]))
    except redis.RedisError as exc:
        log.warning("prediction cache unavailable: %s", exc)
        metrics.CACHE_REQUESTS.labels("error").inc()
        return None
    if not isinstance(value, bytes):
        metrics.CACHE_REQUESTS.labels("miss").inc()
        return None
    metrics.CACHE_REQUESTS.labels("hit").inc()
    return value.decode()


def after_batch(client: redis.Redis, done: Sequence[str], drained: dict[str, int],
                cache: Iterable[tuple[str, str, int]]) -> None:
    """One round trip after a worker commits a batch: cache entries (key, JSON, ttl), the
    drained counters, then the wake-up for synchronous callers waiting on `done`."""
    try:
        pipe = client.pipeline(transaction=False)
        for key, value, ttl in cache:
            pipe.set(key, value, ex=ttl)
        for queue, n in drained.items():
            pipe.hincrby(DRAINED, queue, n)
        if done:
            pipe.publish(DONE_CHANNEL, " ".join(done))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not announce %d finished jobs: %s", len(done), exc)


def announce_done(client: redis.Redis, done: Sequence[str]) -> None:
    after_batch(client, done, {}, ())


def heartbeat(client: redis.Redis, name: str) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS, {name: now})
    pipe.zremrangebyscore(WORKERS, "-inf", now - WORKER_TTL)
    pipe.execute()


def live_workers(client: redis.Redis) -> int:
    return int(client.zcount(WORKERS, time.time() - WORKER_TTL, "+inf"))  # type: ignore[arg-type]


class ResultWaiter:
    """Lets request threads sleep until a worker announces their job done.

    One listener thread per process holds one pub/sub subscription; a waiting request costs an
    Event, not a connection. Whenever the subscription is (re)established every waiter is woken,
    since announcements may have been missed meanwhile: a woken caller always re-reads SQL.
    """

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._pid = 0
        self._closed = False

    def expect(self, job_id: str) -> None:
        """Register interest before the job is published, so no announcement can be missed."""
        self._ensure_thread()
        with self._lock:
            self._events[job_id] = threading.Event()
        # The first request of a process waits (briefly) for the subscription to be live.
        self._subscribed.wait(1.0)

    def wait(self, job_id: str, timeout: float) -> bool:
        """Sleep until the job is announced (True) or `timeout` passes (False)."""
        event = self._events.get(job_id)
        if event is None or timeout <= 0:
            return False
        woken = event.wait(timeout)
        event.clear()
        return woken

    def close(self) -> None:
        """Stop listening (the thread ends within a few seconds)."""
        self._closed = True

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._events.pop(job_id, None)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():  # a thread does not survive fork
            return
        with self._lock:
            if self._pid != os.getpid():
                self._events = {}
                self._subscribed = threading.Event()
                threading.Thread(target=self._listen, name="predq-waiter", daemon=True).start()
                self._pid = os.getpid()

    def _listen(self) -> None:
        client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2,
                                      health_check_interval=15)
        while not self._closed:
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(DONE_CHANNEL)
                pubsub.get_message(timeout=1.0)  # the subscribe confirmation
                self._subscribed.set()
                self._wake(None)
                while not self._closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self._wake(message["data"].decode().split())
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                self._subscribed.clear()
                log.warning("job wake-ups unavailable (%s); reconnecting", exc)
                self._wake(None)
                time.sleep(1.0)
        client.close()

    def _wake(self, job_ids: list[str] | None) -> None:
        with self._lock:
            if job_ids is None:
                events = list(self._events.values())
            else:
                events = [e for e in map(self._events.get, job_ids) if e is not None]
        for event in events:
            event.set()
