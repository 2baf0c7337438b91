"""The "job done" wake-ups through Redis pub/sub, for synchronous callers, and the one round
trip a worker makes after each batch (cache entries, drained counters, wake-ups).

An optimisation over SQL, never the truth: a lost wake-up makes a synchronous caller re-read
SQL at its timeout, a lost cache entry costs a prediction, a lost counter a less accurate
Retry-After.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence

import redis

from service.jobs.admission import DRAINED
from service.store.redisclient import redis_client

log = logging.getLogger(__name__)

DONE_CHANNEL = "predq:done"


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
        client = redis_client(self._redis_url, timeout=None, health_check_interval=15)
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
