"""celery-batches with predq's flush and acknowledgement policies (see `RequeueingBatches`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from typing import Any

from celery import Celery
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

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
