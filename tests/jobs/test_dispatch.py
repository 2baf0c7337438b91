"""Which bulk chunks go out next: priority first, then the tenant with the fewest chunks in
flight per weight, then each tenant's jobs in order; `dispatch` keeps `capacity` in flight, and
sends the chunks of a tenant below its share ahead of those waiting beside a running one's."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis
from sqlalchemy import Engine, delete, select

from service.core.messaging import CHUNK_FRONT_QUEUE, CHUNK_QUEUE, parse_chunk_id
from service.core.settings import Settings
from service.jobs import chunkclaims, chunkstore
from service.jobs.dispatch import (
    Capacity,
    Load,
    Waiting,
    choose,
    dispatch,
    in_flight,
    jumps,
    running,
)
from service.jobs.ending import Ending
from service.jobs.requests import JobRequest
from service.models.registry import ModelInfo
from service.ops import heartbeats
from service.store.db import job_chunks, jobs, tenant_limits
from service.tenants.limits import set_limits

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def waiting(job: str, tenant: str, minute: int, unsent: int = 100, rank: int = 2) -> Waiting:
    return Waiting(job, tenant, rank, T0 + timedelta(minutes=minute), unsent)


def test_a_small_tenant_gets_the_next_slot_beside_a_big_one() -> None:
    big, small = waiting("big", "a", 0), waiting("small", "b", 5, unsent=1)
    assert choose([big, small], {"a": 4}, {}, 2) == {"small": 1, "big": 1}


def test_a_tenants_backlog_over_many_jobs_gets_one_share_not_one_per_job() -> None:
    many = [waiting(f"a{i}", "a", i) for i in range(10)]
    plan = choose([*many, waiting("b0", "b", 20)], {}, {}, 10)
    assert plan["b0"] == 5 and plan == {"a0": 5, "b0": 5}  # a's oldest job first, in order


def test_weights_share_the_slots() -> None:
    plan = choose([waiting("a0", "a", 0), waiting("b0", "b", 1)], {}, {"a": 3.0}, 8)
    assert plan == {"a0": 6, "b0": 2}


def load(flight: dict[str, int], running: dict[str, int]) -> Load:
    return Load(flight, running, [])


def test_a_tenant_below_its_share_beside_a_running_one_goes_ahead_of_what_waits() -> None:
    assert jumps("b", load({"a": 4}, {"a": 2}), {})  # none in flight
    assert jumps("b", load({"a": 4, "b": 1}, {"a": 1, "b": 1}), {})  # 1 running of 4 and 1
    assert not jumps("b", load({"a": 4, "b": 2}, {"a": 2, "b": 1}), {})  # one of its own waits
    assert not jumps("b", load({"a": 2, "b": 2}, {"a": 1, "b": 2}), {})  # its share already
    assert not jumps("b", load({"a": 4, "b": 1}, {"a": 1, "b": 1}), {"b": 0.25})  # per weight
    assert not jumps("b", load({"a": 4}, {}), {})  # a has none running: no one to pass
    assert not jumps("a", load({"a": 4}, {"a": 2}), {})  # alone: one lane, in the order sent
    assert not jumps("a", load({}, {}), {})


def test_priority_orders_before_fair_share() -> None:
    plan = choose([waiting("low", "a", 0), waiting("high", "b", 9, unsent=2, rank=1)],
                  {"b": 10}, {}, 3)
    assert plan == {"high": 2, "low": 1}


ROWS = np.ones((5, 4))


@pytest.fixture
def tenants(engine: Engine, models: dict[str, ModelInfo]) -> Iterator[tuple[str, str]]:
    made = (f"fair-{uuid.uuid4().hex[:8]}", f"fair-{uuid.uuid4().hex[:8]}")
    yield made
    with engine.begin() as conn:
        owned = select(jobs.c.id).where(jobs.c.tenant.in_(made))
        conn.execute(delete(job_chunks).where(job_chunks.c.job_id.in_(owned)))
        conn.execute(delete(jobs).where(jobs.c.tenant.in_(made)))
        conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant.in_(made)))


def _bulk_job(engine: Engine, model: ModelInfo, tenant: str, chunks: int) -> str:
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
        chunkstore.insert_job(conn, job_id, JobRequest(tenant, model, "predict.bulk"),
                              5 * chunks, chunks)
        for seq in range(chunks):
            chunkstore.add_chunk(conn, job_id, seq, ROWS)
    return job_id


def test_dispatch_fills_the_slots_fairly_and_stamps_what_it_sends(
    engine: Engine, models: dict[str, ModelInfo], tenants: tuple[str, str],
) -> None:
    a, b = tenants
    with engine.begin() as conn:
        set_limits(conn, b, weight=2.0)
        others = sum(in_flight(conn).values())  # other tests' jobs of this session
        lane = CHUNK_FRONT_QUEUE if running(conn) else CHUNK_QUEUE  # nothing runs: in order
    big = _bulk_job(engine, models["iris"], a, 30)
    second = _bulk_job(engine, models["iris"], a, 30)
    small = _bulk_job(engine, models["iris"], b, 30)
    with engine.begin() as conn:
        ending = Ending(conn)
        assert dispatch(ending, others + 6) == 6
    sent = [parse_chunk_id(send.ids[0]) for send in ending.sends]
    assert {send.queue for send in ending.sends} == {lane}
    counts = {job: sum(1 for j, _ in sent if j == job) for job in (big, second, small)}
    assert counts == {big: 2, second: 0, small: 4}  # weight 2: b gets twice a's share
    assert sorted(seq for j, seq in sent if j == big) == [0, 1]  # in order
    with engine.begin() as conn:
        assert dispatch(Ending(conn), others + 6) == 0  # full: nothing more goes out
        published = conn.execute(select(job_chunks.c.job_id).where(
            job_chunks.c.published_at.is_not(None),
            job_chunks.c.job_id.in_([big, second, small]))).scalars().all()
    assert len(published) == 6


def test_capacity_is_two_slots_per_bulk_process_of_the_live_workers(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    names = []
    try:
        assert Capacity(client, 4)() >= 4
        for pid, procs in ((os.getpid() * 10 + 1, 6), (os.getpid() * 10 + 2, 3)):
            identity = heartbeats.Identity("host-a", pid, queues=("predict.chunks",),
                                           concurrency=procs)
            heartbeats.heartbeat(client, identity.name, identity)
            names.append(identity.name)
        jobs_only = heartbeats.Identity("host-b", 3, queues=("predict.normal",), concurrency=50)
        heartbeats.heartbeat(client, jobs_only.name, jobs_only)
        names.append(jobs_only.name)
        assert Capacity(client, 4)() >= 18  # (6 + 3) x 2; the jobs worker's count nothing
        assert Capacity(client, 400)() == 400
    finally:
        for name in names:
            heartbeats.forget(client, name)
        client.close()


def test_a_newcomers_chunks_go_ahead_of_those_waiting_behind_a_running_tenant(
    engine: Engine, models: dict[str, ModelInfo], tenants: tuple[str, str],
) -> None:
    a, b = tenants
    with engine.begin() as conn:
        others = sum(in_flight(conn).values())
        alone = not running(conn)  # no other test's chunk is running
    big = _bulk_job(engine, models["iris"], a, 10)
    with engine.begin() as conn:
        ending = Ending(conn)
        assert dispatch(ending, others + 4) == 4  # the slots full of a's chunks
        assert chunkclaims.claim(conn, big, 0, 60.0, "test") is not None  # one runs
    if alone:
        assert {send.queue for send in ending.sends} == {CHUNK_QUEUE}
    small = _bulk_job(engine, models["iris"], b, 3)
    with engine.begin() as conn:
        ending = Ending(conn)
        assert dispatch(ending, others + 8) == 4
    lanes = [(parse_chunk_id(send.ids[0]), send.queue) for send in ending.sends]
    assert sorted(chunk for chunk, lane in lanes if lane == CHUNK_FRONT_QUEUE) == [
        (small, 0), (small, 1), (small, 2)]  # b has none running: all three go ahead
    if alone:
        assert [chunk for chunk, lane in lanes if lane == CHUNK_QUEUE] == [(big, 4)]
