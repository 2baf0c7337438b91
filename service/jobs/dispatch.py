"""Which bulk chunks the workers get next: a query over SQL, the truth; Redis carries their ids.

The bulk processes of the live workers take chunk messages from one queue (`CHUNK_QUEUE`), a
few at a time. `dispatch` keeps `capacity` chunks sent and not done (about two per bulk
process: one being predicted, one waiting), choosing each next chunk by weighted fair share:
  1. priority first: the chunks of a bulk job submitted as `interactive` go before those of a
     `normal` one, and those before `bulk` (a bulk job's priority orders bulk jobs only: its
     chunks never take the capacity of single jobs, which have workers of their own);
  2. within a priority, the tenant with the fewest chunks in flight per unit of its weight
     (`predq limits set TENANT --weight W`; default 1), so one tenant's ten-million-row job,
     or its backlog spread over many jobs, holds another tenant's small job back by a chunk or
     two, not for its whole duration (weighted round robin over tenants, by slots in flight);
  3. within a tenant, its jobs in the order they were submitted, each chunk in order.
A chunk takes a bounded time (its rows follow the model's measured cost, `costs`), so a slot
frees every fraction of a second and the share is kept at that grain.

The chunks sent wait in Redis behind those sent before them (about one per bulk process), so a
tenant whose job arrives while another's chunks fill the slots would still wait for those. The
chunks of a tenant below its share go to the front lane (`CHUNK_FRONT_QUEUE`, which bulk
processes read first), where the next process free takes them: one with fewer chunks in flight
per weight than another tenant that has some running, and none of its own sent and waiting (so
its chunks keep their order, and none waits behind its own). Only the order of what was sent
changes, never how many each tenant has in flight.

Runs after every commit that may free or fill a slot (a chunk written, a bulk job ended, an
upload's chunk stored, a job by reference inserted, the reconciler's sweep), in a transaction
of its own. On PostgreSQL one dispatch runs at a time (a transaction-scoped advisory lock), so
its count of what is in flight is exact; the chunks it takes are locked with SKIP LOCKED, so it
never waits on a worker's or an upload's transaction. SQLite runs one writer at a time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy import Connection, and_, case, func, select, text

from service.core.messaging import (
    CHUNK_FRONT_QUEUE,
    CHUNK_QUEUE,
    CHUNK_TASK,
    PREDICT_QUEUES,
    chunk_id,
)
from service.jobs.chunkstore import ACTIVE, DONE, PENDING, RUNNING, stamp_next
from service.jobs.ending import Ending
from service.ops import heartbeats
from service.store.db import job_chunks, jobs, tenant_limits

#: PostgreSQL advisory lock key of the dispatch (any constant of predq's own).
LOCK = 0x70726571  # "preq"


class Capacity:
    """How many chunks to keep in flight: two per bulk process of the live workers (one
    being predicted, one in hand for the moment it is done), at least `minimum`; read from
    the workers' heartbeats at most every `refresh` seconds."""

    def __init__(self, client: redis.Redis | None, minimum: int, refresh: float = 5.0) -> None:
        self.client, self.minimum, self.refresh = client, minimum, refresh
        self._read: tuple[float, int] | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        if self.client is not None and (self._read is None or now - self._read[0] > self.refresh):
            try:
                live = heartbeats.workers(self.client)
            except redis.RedisError:
                live = []
            processes = sum(w.identity.concurrency for w in live
                            if not w.stale and CHUNK_QUEUE in w.identity.queues)
            self._read = (now, processes)
        return max(self.minimum, 2 * (self._read[1] if self._read else 0))


@dataclass(frozen=True)
class Waiting:
    """A bulk job with chunks not sent yet."""

    job_id: str
    tenant: str
    rank: int  # 0: interactive, 1: normal, 2: bulk
    created_at: datetime
    unsent: int


def dispatch(ending: Ending, capacity: int) -> int:
    """Send chunks until `capacity` are in flight (sent, not done), fairly (see module doc);
    the messages go out after the commit. Returns how many it sent."""
    conn = ending.conn
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})
    load = _load(conn)
    free = capacity - sum(load.flight.values())
    if free <= 0 or not load.waiting:
        return 0
    tenants = {w.tenant for w in load.waiting} | set(load.flight)
    weights = _weights(conn, tenants) if len(tenants) > 1 else {}  # one: weights change nothing
    plan = choose(load.waiting, load.flight, weights, free)
    tenant_of = {w.job_id: w.tenant for w in load.waiting}
    sent = 0
    for job_id, count in plan.items():
        ahead = jumps(tenant_of[job_id], load, weights)
        for seq in stamp_next(conn, job_id, count):
            ending.send(CHUNK_TASK, CHUNK_FRONT_QUEUE if ahead else CHUNK_QUEUE,
                        [chunk_id(job_id, seq)])
            sent += 1
    return sent


def jumps(tenant: str, load: Load, weights: dict[str, float]) -> bool:
    """Whether the tenant's chunks go to the front lane (see module doc): none of its sent
    chunks waits, and another tenant that has chunks running has more in flight per weight."""
    mine = load.flight.get(tenant, 0)
    if mine > load.running.get(tenant, 0):
        return False  # its own wait in a lane: the next goes behind them
    share = mine / weights.get(tenant, 1.0)
    return any(load.flight.get(other, 0) / weights.get(other, 1.0) > share
               for other, n in load.running.items() if n and other != tenant)


def choose(waiting: Sequence[Waiting], flight: dict[str, int], weights: dict[str, float],
           slots: int) -> dict[str, int]:
    """How many chunks of which jobs fill `slots`: priority, then the tenant with the fewest
    in flight per weight (ties: the tenant whose oldest job is oldest), then each tenant's
    jobs in order. Pure, so the rule is tested on its own."""
    load = defaultdict(int, flight)
    left = {w.job_id: w.unsent for w in waiting}
    queue = sorted(waiting, key=lambda w: (w.rank, w.created_at, w.job_id))
    plan: dict[str, int] = defaultdict(int)
    for _ in range(slots):
        open_ = [w for w in queue if left[w.job_id] > 0]
        if not open_:
            break
        rank = open_[0].rank
        firsts: dict[str, Waiting] = {}
        for w in open_:
            if w.rank == rank and w.tenant not in firsts:
                firsts[w.tenant] = w  # each tenant's oldest job with chunks left
        pick = min(firsts.values(), key=lambda w: (
            load[w.tenant] / weights.get(w.tenant, 1.0), w.created_at, w.job_id))
        plan[pick.job_id] += 1
        left[pick.job_id] -= 1
        load[pick.tenant] += 1
    return dict(plan)


@dataclass(frozen=True)
class Load:
    """The running bulk jobs' chunks not done: sent (`flight`) and claimed by a worker
    (`running`), per tenant; and the jobs with chunks not sent yet."""

    flight: dict[str, int]
    running: dict[str, int]
    waiting: list[Waiting]


def in_flight(conn: Connection) -> dict[str, int]:
    """Chunks sent and not done, of bulk jobs still running, per tenant."""
    return _load(conn).flight


def running(conn: Connection) -> dict[str, int]:
    """Chunks claimed by a worker and not done, of bulk jobs still running, per tenant."""
    return _load(conn).running


def _load(conn: Connection) -> Load:
    """The Load, in one pass over the chunks not done of the running bulk jobs."""
    sent = job_chunks.c.published_at.is_not(None)
    unsent = and_(job_chunks.c.status == PENDING, job_chunks.c.published_at.is_(None))
    rows = conn.execute(
        select(jobs.c.id, jobs.c.tenant, jobs.c.queue, jobs.c.created_at,
               func.sum(case((sent, 1), else_=0)), func.sum(case((unsent, 1), else_=0)),
               func.sum(case((job_chunks.c.status == RUNNING, 1), else_=0)))
        .select_from(job_chunks.join(jobs, jobs.c.id == job_chunks.c.job_id))
        .where(jobs.c.status.in_(ACTIVE), jobs.c.n_chunks.is_not(None),
               job_chunks.c.status != DONE)
        .group_by(jobs.c.id, jobs.c.tenant, jobs.c.queue, jobs.c.created_at))
    flight: dict[str, int] = defaultdict(int)
    claimed: dict[str, int] = defaultdict(int)
    waiting = []
    for job_id, tenant, queue, created_at, in_air, left, held in rows:
        if in_air:
            flight[tenant] += int(in_air)
        if held:
            claimed[tenant] += int(held)
        if left:
            waiting.append(Waiting(job_id, tenant, _rank(queue), created_at, int(left)))
    return Load(dict(flight), dict(claimed), waiting)


def _rank(queue: str) -> int:
    return PREDICT_QUEUES.index(queue) if queue in PREDICT_QUEUES else len(PREDICT_QUEUES)


def _weights(conn: Connection, tenants: set[str]) -> dict[str, float]:
    rows = conn.execute(select(tenant_limits.c.tenant, tenant_limits.c.weight)
                        .where(tenant_limits.c.tenant.in_(tenants),
                               tenant_limits.c.weight.is_not(None)))
    return {tenant: max(0.01, float(weight)) for tenant, weight in rows}
