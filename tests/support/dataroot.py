"""Tenants' directories under the test data root, and jobs by reference submitted to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import redis
from sqlalchemy import Engine, select

from service.bulk import outputs, refs
from service.bulk.areas import Area, tenant_dir
from service.bulk.parsing import Bounds
from service.core.messaging import chunk_id
from service.core.settings import Settings
from service.jobs.requests import JobRequest
from service.jobs.submit import make_submitter
from service.models.registry import ModelInfo
from service.store.db import jobs
from tests.support.tenants import Tenant
from workers.batching import Runner
from workers.bulkrun import ChunkRunner
from workers.modelcore import ArtifactSource, ModelCache


def tenant_home(settings: Settings, tenant: str) -> Iterator[Path]:
    """The tenant's directory under the data root, made now and removed afterwards."""
    here = Path(settings.data_root) / tenant_dir(tenant)
    here.mkdir()
    yield here
    remove_tree(here)


def remove_tree(here: Path) -> None:
    """Delete `here` and everything in it (read-only files and symbolic links too)."""
    for path in sorted(here.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
            path.rmdir()
        else:
            path.unlink()
    here.rmdir()


def rel(path: Path, settings: Settings) -> str:
    """`path` as its tenant names it: relative to the tenant's directory."""
    return path.relative_to(Path(settings.data_root)).as_posix().split("/", 1)[1]


def submit(client: Tenant, **body: object) -> dict[str, object]:
    """A job by reference of model iris, accepted."""
    response = client.post("/v1/jobs", json={"model": "iris", **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def refused(client: Tenant, **body: object) -> dict[str, str]:
    """A job of model iris refused with 400: the error object."""
    response = client.post("/v1/jobs", json={"model": "iris", **body})
    assert response.status_code == 400, response.text
    return response.json()["error"]  # type: ignore[no-any-return]


def chunk_runner(engine: Engine, settings: Settings) -> ChunkRunner:
    """A worker's chunk runner in this process: a job runs when the test says so."""
    models = ModelCache(read=ArtifactSource(engine, settings.model_dir).read)
    return ChunkRunner(Runner(engine, models=models, data_root=settings.data_root))


def unsent_job(engine: Engine, settings: Settings, model: ModelInfo, tenant: str, given: str,
               output: str | None = None, overwrite: bool = False) -> str:
    """A job by reference committed and never published: it stays queued (and reads its
    input) until a test runs its chunks."""
    area = Area(settings.data_root, tenant)
    with engine.connect() as conn:
        target = outputs.target(conn, area, output, overwrite) if output else None
    ref = refs.plan(area, given, target, model, Bounds(300, 10_000))
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        return make_submitter(settings, engine, broker, None).reference(
            JobRequest(tenant, model), ref, "").id
    finally:
        broker.close()


def run_all(runner: ChunkRunner, engine: Engine, job_id: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        n_chunks = conn.execute(select(jobs.c.n_chunks).where(jobs.c.id == job_id)).scalar_one()
    runner.run([chunk_id(job_id, seq) for seq in range(n_chunks)])
    with engine.connect() as conn:
        row = conn.execute(select(jobs.c.status, jobs.c.error).where(jobs.c.id == job_id)).one()
    return row.status, row.error
