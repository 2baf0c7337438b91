"""Lease renewal: while a worker process holds claims (a micro-batch's jobs, a bulk chunk), one
thread of the process renews their leases every `lease_seconds / 3`. A live batch keeps its
jobs however long it runs; a worker that dies or freezes stops renewing, and its jobs are
taken over once the lease ends, in seconds rather than after the longest a task may run.
A late write of the old claim is fenced (its attempt no longer matches)."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from service.store.db import not_durable

log = logging.getLogger(__name__)
Renew = Callable[[Connection], int]


class LeaseKeeper:
    """Renews the leases of what this process holds; one thread per process, started on first
    use (a thread does not survive fork)."""

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self.engine = engine
        self.every = lease_seconds / 3
        self._held: dict[int, Renew] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pid = 0

    @contextmanager
    def holding(self, renew: Renew) -> Iterator[None]:
        """Renew with `renew(conn)` while the block runs."""
        self._ensure_thread()
        key = next(self._ids)
        with self._lock:
            self._held[key] = renew
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)

    def renew_now(self) -> int:
        with self._lock:
            held = list(self._held.values())
        if not held:
            return 0
        with self.engine.begin() as conn:
            not_durable(conn)  # a lost renewal costs a takeover, never a result
            return sum(renew(conn) for renew in held)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._held = {}
                threading.Thread(target=self._run, name="predq-leases", daemon=True).start()
                self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            time.sleep(self.every)
            try:
                self.renew_now()
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("could not renew leases: %s", str(exc).splitlines()[0])
