"""Worker heartbeats in Redis. Each worker's main process beats every few seconds with what it
is (host, process, queues, concurrency); its pool processes add the jobs and rows they finish
to the same record. Health counts the live workers; the dashboard lists them, with their rates,
and keeps showing a worker that stopped beating, as stale, for a while.

Cost: one pipelined round trip per beat, and one per finished batch (two HINCRBYs)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from service.core.messaging import CHUNK_QUEUE, PREDICT_QUEUES, WEBHOOK_QUEUE

log = logging.getLogger(__name__)

WORKERS = "predq:workers"  # sorted set: worker name -> last heartbeat (unix time)
WORKER_TTL = 30.0  # no beat for this long: not live (health, `predq health worker`), stale
FORGET_AFTER = 600.0  # a stale worker is still listed this long, then forgotten
RATE_WINDOW = 60.0  # a worker's jobs/s and rows/s are over this long
RECORD = "predq:worker:"  # + name: a hash, what the worker is and what it finished


def record_key(name: str) -> str:
    return RECORD + name


@dataclass(frozen=True)
class Identity:
    """What a worker is; `name` (host:pid of the main process) is its member of WORKERS."""

    host: str
    pid: int
    node: str = ""  # Celery's node name: celery@host, deliverer@host
    queues: tuple[str, ...] = ()
    concurrency: int = 0
    started_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"


@dataclass(frozen=True)
class WorkerState:
    """A worker as the dashboard shows it. Rates are over the last RATE_WINDOW seconds."""

    identity: Identity
    last_heartbeat: float
    jobs_total: int  # finished by its pool since it started
    rows_total: int
    jobs_per_second: float
    rows_per_second: float
    stale: bool  # no beat for WORKER_TTL: stopped, hung, or cut off from Redis
    usage: list[dict[str, Any]] = field(default_factory=list)  # per process: cpu, memory


def heartbeat(client: redis.Redis, name: str, identity: Identity | None = None,
              usage: list[dict[str, Any]] | None = None) -> None:
    """Say `name` is alive now; with its identity, refresh its record too (and with `usage`,
    its processes' CPU and memory). The record keeps the totals as they were at its last
    beats, so a reader can work out rates over the last minute."""
    now = time.time()
    key = record_key(name)
    fields: dict[str, str | int | float] = {"beat": now}
    if identity is not None:
        fields |= {"host": identity.host, "pid": identity.pid, "node": identity.node,
                   "queues": ",".join(identity.queues), "concurrency": identity.concurrency,
                   "started_at": identity.started_at}
        found: list[bytes | None] = client.hmget(  # type: ignore[assignment]
            key, ["jobs", "rows", "snaps"])
        jobs, rows, seen = found
        snaps = [s for s in (seen.decode().split(";") if seen else []) if s]
        snaps.append(f"{now}:{int(jobs or 0)}:{int(rows or 0)}")
        fields["snaps"] = ";".join(s for s in snaps if now - _snapshot(s)[0] <= 2 * RATE_WINDOW)
    if usage is not None:
        fields["usage"] = json.dumps(usage)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS, {name: now})
    pipe.zremrangebyscore(WORKERS, "-inf", now - FORGET_AFTER)
    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
    pipe.expire(key, int(FORGET_AFTER))
    pipe.execute()


def forget(client: redis.Redis, name: str) -> None:
    """A worker shutting down cleanly is gone at once, not stale."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(WORKERS, name)
    pipe.delete(record_key(name))
    pipe.execute()


class Tally:
    """Counts a pool process's finished jobs and rows into its worker's record."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client, self.key = client, record_key(name)

    def add(self, jobs: int, rows: int) -> None:
        if not (jobs or rows):
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.key, "jobs", jobs)
            pipe.hincrby(self.key, "rows", rows)
            pipe.execute()
        except redis.RedisError as exc:  # a figure on a dashboard; the work itself is done
            log.warning("could not count finished work for the dashboard: %s", exc)


def live_workers(client: redis.Redis) -> int:
    """Live workers that predict (single jobs or bulk chunks): the webhook deliverer, a
    worker too, is not one."""
    names: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
        WORKERS, time.time() - WORKER_TTL, "+inf")
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(record_key(name.decode()), "queues")
    queues: list[bytes | None] = pipe.execute()
    return sum(1 for q in queues if q is not None and predicts(q.decode().split(",")))


def role(queues: Iterable[str]) -> str:
    """What a worker does, by the queues it consumes: `predict` (single jobs), `chunks` (bulk
    chunks only), `webhooks` (the deliverer), else `maintenance`."""
    consumed = set(queues)
    if consumed & set(PREDICT_QUEUES):
        return "predict"
    if CHUNK_QUEUE in consumed:
        return "chunks"
    return "webhooks" if WEBHOOK_QUEUE in consumed else "maintenance"


def predicts(queues: Iterable[str]) -> bool:
    return role(queues) in ("predict", "chunks")


def workers(client: redis.Redis, now: float | None = None) -> list[WorkerState]:
    """Every worker seen in the last FORGET_AFTER seconds, live ones first, by name."""
    now = now or time.time()
    beats: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
        WORKERS, now - FORGET_AFTER, "+inf", withscores=True)
    pipe = client.pipeline(transaction=False)
    for name, _ in beats:
        pipe.hgetall(record_key(name.decode()))
    records = pipe.execute()
    found = [_state(name.decode(), beat, record, now)
             for (name, beat), record in zip(beats, records, strict=True)]
    return sorted(found, key=lambda w: (w.stale, w.identity.name))


def _state(name: str, beat: float, raw: Mapping[bytes, bytes], now: float) -> WorkerState:
    record = {k.decode(): v.decode() for k, v in raw.items()}
    host, _, pid = name.rpartition(":")
    identity = Identity(
        host=record.get("host", host), pid=int(record.get("pid", pid or 0)),
        node=record.get("node", ""), queues=tuple(q for q in record.get("queues", "").split(",")
                                                  if q),
        concurrency=int(record.get("concurrency", 0)),
        started_at=float(record.get("started_at", beat)))
    jobs, rows = int(record.get("jobs", 0)), int(record.get("rows", 0))
    since, jobs_then, rows_then = _window_start(record.get("snaps", ""), now)
    if since is None:  # no snapshot yet: since the worker started, with nothing done then
        since, jobs_then, rows_then = identity.started_at, 0, 0
    stale = now - beat > WORKER_TTL
    elapsed = 0.0 if stale else now - since  # a stale worker's rate is not known: 0
    return WorkerState(identity, beat, jobs, rows, _rate(jobs - jobs_then, elapsed),
                       _rate(rows - rows_then, elapsed), stale,
                       json.loads(record["usage"]) if "usage" in record else [])


def _window_start(snaps: str, now: float) -> tuple[float | None, int, int]:
    """The newest snapshot at least RATE_WINDOW old (else the oldest one there is): rates
    over the last minute, as the dashboard's own jobs/s and rows/s are."""
    found = [_snapshot(s) for s in snaps.split(";") if s]
    if not found:
        return None, 0, 0
    old_enough = [s for s in found if now - s[0] >= RATE_WINDOW]
    return max(old_enough) if old_enough else min(found)


def _rate(delta: int, elapsed: float) -> float:
    return round(max(0, delta) / elapsed, 2) if elapsed > 0 else 0.0


def _snapshot(text: str) -> tuple[float, int, int]:
    at, jobs, rows = text.split(":")
    return float(at), int(jobs), int(rows)
