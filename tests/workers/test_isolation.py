"""A nightly bulk job must not take the service away (issue 28), shown by order and
reservation on the production topology (a worker of single jobs beside a worker of bulk
chunks), with a slow model and small chunks, never by a wall-clock threshold:
- an interactive job runs while every bulk process is inside a chunk, and is done before
  those chunks are;
- a tenant's small bulk job waits a few chunks behind another tenant's backlog, however many
  jobs that backlog is spread over, and goes ahead of the chunks waiting in the queue;
- a chunk holds as many rows as the model's measured cost allows (about 0.25 s of predict);
- what waits is counted in chunks and rows, and a bulk job with chunks waiting is waiting.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func, select, update

from service.core.settings import Settings
from service.models.registry import add_model
from service.store.db import job_chunks, jobs
from tests.faults.conftest import Stack
from tests.realtime.conftest import SETOSA, until
from tests.support.sleepy import train_per_row
from tests.support.tenants import Tenant


def npy(rows: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, rows)
    return out.getvalue()


def upload(tenant: Tenant, model: str, rows: np.ndarray) -> str:
    response = tenant.post(f"/v1/jobs?model={model}", data=npy(rows),
                           headers={"Content-Type": "application/x-npy"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def finished(engine: Engine, job_id: str) -> list[object]:
    """When each chunk of the job was committed, in order."""
    with engine.connect() as conn:
        return list(conn.execute(select(job_chunks.c.finished_at).where(
            job_chunks.c.job_id == job_id, job_chunks.c.finished_at.is_not(None))
            .order_by(job_chunks.c.finished_at)).scalars())


def running_chunks(engine: Engine, job_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(job_chunks).where(
            job_chunks.c.job_id == job_id, job_chunks.c.status == "running")).scalar_one())


def test_an_interactive_job_runs_while_every_bulk_process_is_in_a_chunk(
    stack: Callable[..., Stack], engine: Engine,
) -> None:
    s = stack(bulk_chunk_rows=1)
    s.start_split_workers()
    tenant = s.tenant()
    bulk = upload(tenant, "sleepy", np.tile([2500.0, 0.0], (8, 1)))  # 2.5 s chunks
    until(lambda: running_chunks(engine, bulk) == 2, what="both bulk processes in a chunk")
    with engine.connect() as conn:
        held = list(conn.execute(select(job_chunks.c.seq).where(
            job_chunks.c.job_id == bulk, job_chunks.c.status == "running")).scalars())
    quick = tenant.submit("iris", [SETOSA], priority="interactive")
    done = tenant.wait(quick)
    assert done["status"] == "succeeded"
    with engine.connect() as conn:
        still = conn.execute(select(job_chunks.c.status).where(
            job_chunks.c.job_id == bulk, job_chunks.c.seq.in_(held))).scalars().all()
    # Not one of the chunks in hand when it came had to end first: its capacity was its own.
    assert still == ["running", "running"], (done, still)
    assert tenant.delete(f"/v1/jobs/{bulk}").status_code == 200


def test_a_small_tenants_job_waits_a_few_chunks_not_the_other_tenants_backlog(
    stack: Callable[..., Stack], engine: Engine,
) -> None:
    only_these_tenants(engine)
    s = stack(bulk_chunk_rows=1)
    s.start_split_workers()
    big, small = s.tenant(), s.tenant()
    backlog = [upload(big, "sleepy", np.tile([300.0, 0.0], (6, 1))) for _ in range(5)]
    until(lambda: sum(len(finished(engine, j)) for j in backlog) >= 2, what="the backlog")
    mine = upload(small, "sleepy", np.array([[300.0, 0.0]]))
    assert small.wait(mine, timeout=60)["status"] == "succeeded"
    [done_at] = finished(engine, mine)
    with engine.connect() as conn:
        came = conn.execute(select(jobs.c.created_at).where(jobs.c.id == mine)).scalar_one()
        sent = conn.execute(select(job_chunks.c.published_at).where(
            job_chunks.c.job_id == mine)).scalar_one()
    ends = [at for j in backlog for at in finished(engine, j)]
    waited = sum(1 for at in ends if came < at <= sent)  # type: ignore[operator]
    ahead = sum(1 for at in ends if sent < at < done_at)  # type: ignore[operator]
    # 30 chunks over 5 jobs: a slot per job would have put ~20 ahead of it (4 each in flight).
    # A share per tenant: the 4 slots were the big tenant's (2 predicted, 2 in the queue), and
    # the first to come free is its chunk's (one ended; two if they ended in the same instant).
    assert waited <= 2, (waited, ahead)
    # Sent, it goes ahead of the 2 queued (the front lane: its tenant is below its share):
    # behind it, only the 2 being predicted, and one taken by a process that came free in
    # the same instant. (Without the front lane, the 2 queued as well: 4.)
    assert ahead <= 2 + 1, (waited, ahead)
    for job_id in backlog:
        big.delete(f"/v1/jobs/{job_id}")


def only_these_tenants(engine: Engine) -> None:
    """End the bulk jobs earlier tests left queued or running in this session's database
    (their workers are gone): the dispatch shares its slots among every tenant with chunks in
    flight, and a third tenant holding some would take slots from the two tenants of the test
    and, by the fair share, let the big one's chunks go ahead too."""
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.n_chunks.is_not(None),
                                        jobs.c.status.in_(("queued", "running")))
                     .values(status="cancelled"))


def test_a_chunk_holds_as_many_rows_as_the_models_cost_allows(
    stack: Callable[..., Stack], engine: Engine, settings: Settings, tmp_path: Path,
) -> None:
    name = f"per-row-{uuid.uuid4().hex[:8]}"
    path = train_per_row(tmp_path / "per-row.joblib")
    with engine.begin() as conn:  # measured at registration: 50 us a row
        add_model(conn, settings.model_dir, str(path), name, "1")
    s = stack(bulk_chunk_rows=100_000)
    tenant = s.tenant()
    job_id = upload(tenant, name, np.tile([50.0, 1.0], (20_000, 1)))
    with engine.connect() as conn:
        sizes = list(conn.execute(select(job_chunks.c.n_rows).where(
            job_chunks.c.job_id == job_id)).scalars())
    # 0.25 s of predict at 50 us (and some) a row: at most 5,000 rows, not the 100,000 cap.
    assert len(sizes) >= 4 and max(sizes) <= 5_000, sizes


def test_depth_counts_waiting_chunks_and_rows_and_the_bulk_job_waiting(
    stack: Callable[..., Stack], engine: Engine,
) -> None:
    s = stack(bulk_chunk_rows=100, depth_refresh_interval=0.0)
    tenant = s.tenant()
    job_id = upload(tenant, "iris", np.tile(SETOSA, (1000, 1)))  # no worker: it all waits
    with engine.connect() as conn:
        assert conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar() in (
            "queued", "running")
    ready = tenant.get("/readyz").json()
    bulk = ready["queues"]["predict.bulk"]
    assert bulk["depth"] >= 1 and bulk["chunks"] >= 10 and bulk["rows"] >= 1000, ready
    waiting = tenant.get("/v1/stats").json()["waiting"]
    assert waiting["predict.bulk"] == {"jobs": 1, "rows": 1000}
    metrics = tenant.get("/metrics").text
    assert 'predq_queue_depth_chunks{queue="predict.bulk"}' in metrics
