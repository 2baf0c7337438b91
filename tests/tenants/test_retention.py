"""Retention: finished jobs go after their retention (job, tenant, default); inputs of
finished bulk jobs go at once unless kept; live jobs never go."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
import redis
from sqlalchemy import Engine, delete, insert, select, update

from service.core import times
from service.jobs import chunkstore, idempotency, lifecycle
from service.jobs.lifecycle import NewJob
from service.jobs.requests import JobRequest
from service.models.registry import ModelInfo
from service.store.db import idempotency_keys, job_chunks, tenant_limits
from service.store.db import jobs as jobs_table
from service.tenants import limits as ratelimit
from service.tenants import retention
from workers.maintenance import RetentionPace

DAY = 86400.0


@pytest.fixture
def tenants(engine: Engine) -> Iterator[tuple[str, str]]:
    pair = (f"keep-{uuid.uuid4().hex[:8]}", f"short-{uuid.uuid4().hex[:8]}")
    yield pair
    with engine.begin() as conn:
        ids = select(jobs_table.c.id).where(jobs_table.c.tenant.in_(pair))
        conn.execute(delete(job_chunks).where(job_chunks.c.job_id.in_(ids)))
        conn.execute(delete(jobs_table).where(jobs_table.c.tenant.in_(pair)))
        conn.execute(delete(tenant_limits).where(tenant_limits.c.tenant.in_(pair)))
        conn.execute(delete(idempotency_keys).where(idempotency_keys.c.tenant.in_(pair)))


def job(engine: Engine, model: ModelInfo, tenant: str, status: str, age: float,
        own: int | None = None) -> str:
    """A job finished `age` seconds ago (or still `status` if not final)."""
    new = NewJob(tenant, model.id, np.array([[1.0, 2.0, 3.0, 4.0]]), retention=own).with_id()
    with engine.begin() as conn:
        lifecycle.insert_jobs(conn, [new])
        final = status not in ("queued", "running")
        conn.execute(update(jobs_table).where(jobs_table.c.id == new.id).values(
            status=status,
            finished_at=times.utcnow() - timedelta(seconds=age) if final else None,
            created_at=times.utcnow() - timedelta(seconds=age + 1)))
    return new.id


def bulk_job(engine: Engine, model: ModelInfo, tenant: str, status: str, keep: bool) -> str:
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
        chunkstore.add_chunk(conn, job_id, 0, np.ones((3, 4)))
        chunkstore.insert_job(conn, job_id, JobRequest(tenant, model, "predict.bulk",
                                                   keep_inputs=keep), 3, 1)
        conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(
            status=status, finished_at=times.utcnow()))
    return job_id


def exists(engine: Engine, job_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(jobs_table.c.id).where(
            jobs_table.c.id == job_id)).first() is not None


def test_jobs_go_after_their_own_their_tenants_or_the_default_retention(
    engine: Engine, models: dict[str, ModelInfo], tenants: tuple[str, str]
) -> None:
    iris = models["iris"]
    default_tenant, short_tenant = tenants
    with engine.begin() as conn:
        ratelimit.set_limits(conn, short_tenant, retention=DAY)
    old = job(engine, iris, default_tenant, "succeeded", 31 * DAY)
    young = job(engine, iris, default_tenant, "failed", 29 * DAY)
    waiting = job(engine, iris, default_tenant, "queued", 400 * DAY)
    short_old = job(engine, iris, short_tenant, "cancelled", 2 * DAY)
    short_young = job(engine, iris, short_tenant, "succeeded", DAY / 2)
    own_old = job(engine, iris, default_tenant, "succeeded", 120, own=60)
    own_young = job(engine, iris, default_tenant, "expired", 30, own=60)
    own_long = job(engine, iris, short_tenant, "succeeded", 5 * DAY, own=int(10 * DAY))
    with engine.begin() as conn:
        conn.execute(insert(idempotency_keys), [
            {"tenant": default_tenant, "key": "old", "fingerprint": "x", "job_id": young,
             "created_at": times.utcnow() - timedelta(hours=25)},
            {"tenant": default_tenant, "key": "new", "fingerprint": "x", "job_id": young,
             "created_at": times.utcnow() - timedelta(hours=23)}])
        swept = retention.sweep(conn, 30 * DAY)
        idempotency.purge(conn, times.utcnow() - idempotency.KEEP)  # as the reconciler does
    assert swept["deleted"] >= 3
    for gone in (old, short_old, own_old):
        assert not exists(engine, gone)
    for kept in (young, waiting, short_young, own_young, own_long):
        assert exists(engine, kept)
    with engine.connect() as conn:
        keys = conn.execute(select(idempotency_keys.c.key).where(
            idempotency_keys.c.tenant == default_tenant)).scalars().all()
    assert keys == ["new"]  # kept at least 24 hours, then purged


def test_finished_bulk_jobs_lose_their_inputs_unless_asked_to_keep_them(
    engine: Engine, models: dict[str, ModelInfo], tenants: tuple[str, str]
) -> None:
    tenant = tenants[0]
    dropped = bulk_job(engine, models["iris"], tenant, "cancelled", keep=False)
    kept = bulk_job(engine, models["iris"], tenant, "failed", keep=True)
    running = bulk_job(engine, models["iris"], tenant, "running", keep=False)
    with engine.begin() as conn:
        retention.sweep(conn, 30 * DAY)
    with engine.connect() as conn:
        inputs = dict(conn.execute(select(job_chunks.c.job_id, job_chunks.c.inputs).where(
            job_chunks.c.job_id.in_([dropped, kept, running]))).all())
    assert inputs[dropped] is None
    assert inputs[kept] is not None and inputs[running] is not None


def test_expired_jobs_are_found_among_a_hundred_thousand_that_are_not(
    engine: Engine, models: dict[str, ModelInfo], tenants: tuple[str, str]
) -> None:
    """The sweep's expiry is computed in SQL: its LIMIT takes only due jobs, so expired jobs
    are deleted however many young ones carry a retention of their own (before: the first
    5,000 of those were read and filtered in Python, and the expired never came up)."""
    tenant = tenants[0]
    now = times.utcnow()
    model_id = models["iris"].id

    def rows(n: int, age: float, own: int | None) -> list[dict[str, object]]:
        return [{"id": str(uuid.uuid4()), "tenant": tenant, "model_id": model_id,
                 "status": "succeeded", "queue": "predict.normal", "n_rows": 1,
                 "attempts": 1, "created_at": now - timedelta(seconds=age + 1),
                 "finished_at": now - timedelta(seconds=age), "from_cache": False,
                 "retention": own} for _ in range(n)]

    young_own = rows(10_000, 3600, int(DAY))  # kept a day; finished an hour ago
    young = rows(100_000, 3600, None)  # the default retention (30 days)
    old_own = rows(5, 7200, 3600)  # kept an hour; finished two hours ago
    old = rows(5, 31 * DAY, None)
    with engine.begin() as conn:
        for batch in (young_own, young, old_own, old):
            for start in range(0, len(batch), 20_000):
                conn.execute(insert(jobs_table), batch[start:start + 20_000])
    with engine.begin() as conn:
        swept = retention.sweep(conn, 30 * DAY, limit=100)
    assert swept["deleted"] == 10
    due = {r["id"] for r in old_own + old}
    with engine.connect() as conn:
        left = set(conn.execute(select(jobs_table.c.id).where(
            jobs_table.c.tenant == tenant)).scalars())
    assert not due & left and len(left) == 110_000
    with engine.begin() as conn:  # nothing more is due: a second run deletes nothing
        assert retention.sweep(conn, 30 * DAY, limit=100)["deleted"] == 0


def test_a_backlog_of_expired_jobs_is_swept_run_after_run_not_once_a_minute(
    engine: Engine, models: dict[str, ModelInfo], tenants: tuple[str, str], redis_url: str
) -> None:
    """Retention runs once a minute; a run that deletes as many jobs as it may leaves a
    backlog behind, and the next reconciler run sweeps again rather than a minute later (so
    deletion keeps up with more than one run's worth of jobs a minute)."""
    old = [job(engine, models["iris"], tenants[0], "succeeded", 31 * DAY) for _ in range(25)]
    client = redis.Redis.from_url(redis_url)
    client.delete(RetentionPace.MARK)
    pace = RetentionPace(client)
    runs = []
    while pace.due():
        with engine.begin() as conn:
            deleted = retention.sweep(conn, 30 * DAY, limit=10)["deleted"]
        pace.swept(deleted, limit=10)
        runs.append(deleted)
        assert len(runs) < 10
    assert runs == [10, 10, 5]  # then a minute's rest: the backlog is gone
    assert not any(exists(engine, job_id) for job_id in old)
    client.delete(RetentionPace.MARK)
    client.close()
