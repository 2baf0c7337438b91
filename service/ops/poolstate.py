"""What each process of a worker is doing, for the dashboard's workers view: each pool process
says when it starts and ends a task (busy with what, or idle, since when), and the main process
measures the CPU and memory of itself and its pool at every heartbeat.

Cost: one pipelined round trip at the start and one at the end of each task (a batch of jobs,
a chunk), beside the task's own SQL; nothing on the API's path."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import redis

from service.ops.heartbeats import FORGET_AFTER, record_key

log = logging.getLogger(__name__)


def procs_key(name: str) -> str:
    return record_key(name) + ":procs"


class Activity:
    """A pool process's busy/idle state under its worker's name."""

    def __init__(self, client: redis.Redis, name: str | None, pid: int | None = None) -> None:
        # No name: not under a worker that beats (a test's runner); nothing is recorded.
        self.client, self.pid = client, pid or os.getpid()
        self.key = None if name is None else procs_key(name)

    @contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Busy with `what` while the block runs, idle after it (however it ends)."""
        self._say({"busy": True, "task": what[:200], "since": time.time()})
        try:
            yield
        finally:
            self._say({"busy": False, "task": None, "since": time.time()})

    def _say(self, state: dict[str, Any]) -> None:
        if self.key is None:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.key, str(self.pid), json.dumps(state))
            pipe.expire(self.key, int(FORGET_AFTER))
            pipe.execute()
        except redis.RedisError as exc:  # a figure on a dashboard; the task runs regardless
            log.info("could not record pool activity: %s", exc)


@dataclass(frozen=True)
class Usage:
    pid: int
    role: str  # main | pool
    cpu_percent: float  # of one core, since the previous heartbeat
    rss_bytes: int


class Meter:
    """CPU and memory of a worker's main process and its pool, measured at each heartbeat
    (CPU over the time since the one before)."""

    def __init__(self, pid: int | None = None) -> None:
        self.main = psutil.Process(pid or os.getpid())
        self.known: dict[int, psutil.Process] = {}

    def measure(self) -> list[Usage]:
        found = [self._usage(self.main, "main")]
        try:
            children = self.main.children()
        except psutil.Error:
            children = []
        alive = {child.pid for child in children}
        self.known = {pid: p for pid, p in self.known.items() if pid in alive}
        for child in children:
            proc = self.known.setdefault(child.pid, child)
            found.append(self._usage(proc, "pool"))
        return [usage for usage in found if usage.pid]

    def _usage(self, proc: psutil.Process, role: str) -> Usage:
        try:
            with proc.oneshot():
                return Usage(proc.pid, role, round(proc.cpu_percent(None), 1),
                             int(proc.memory_info().rss))
        except psutil.Error:
            return Usage(0, role, 0.0, 0)


def processes(client: redis.Redis, name: str, usage: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """The worker's processes as the dashboard lists them: each measured one (from its
    heartbeat's `usage`) with the pool state it last reported, main process first."""
    raw: dict[bytes, bytes] = client.hgetall(procs_key(name))  # type: ignore[assignment]
    states = {int(pid): json.loads(state) for pid, state in raw.items()}
    out = []
    for measured in usage:
        state = states.get(int(measured["pid"]), {})
        out.append({**measured, "busy": bool(state.get("busy", False)),
                    "task": state.get("task"), "since": state.get("since")})
    return out
