"""Group commit on a real database: a returned submit is committed; concurrent ones share."""

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, delete, select

from service.core.errors import TransientError
from service.jobs.committer import GroupCommitter
from service.jobs.ending import JobEnds
from service.jobs.lifecycle import NewJob
from service.models.registry import ModelInfo
from service.store.db import jobs as jobs_table
from service.store.db import make_engine

TENANT = "submitter"


class Published:
    def __init__(self) -> None:
        self.groups: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    def __call__(self, task: str, queue: str, ids: Sequence[str],
                 countdown: float | None = None) -> None:
        with self.lock:
            self.groups.append((queue, list(ids)))


@pytest.fixture
def cleanup(engine: Engine) -> Iterator[None]:
    yield
    with engine.begin() as conn:
        conn.execute(delete(jobs_table).where(jobs_table.c.tenant == TENANT))


def _job(models: dict[str, ModelInfo]) -> NewJob:
    return NewJob(TENANT, models["iris"].id, np.array([[5.1, 3.5, 1.4, 0.2]]))


@pytest.mark.usefixtures("cleanup")
def test_submit_returns_only_once_the_row_is_committed_then_publishes(
    engine: Engine, models: dict[str, ModelInfo]
) -> None:
    published = Published()
    committer = GroupCommitter(JobEnds(engine), published, linger=0.003)
    job = committer.submit(_job(models))
    with engine.connect() as conn:  # another connection sees it: committed, not just flushed
        assert conn.execute(select(jobs_table.c.status).where(jobs_table.c.id == job.id)
                            ).scalar_one() == "queued"
    for _ in range(200):
        if published.groups:
            break
        threading.Event().wait(0.01)
    assert published.groups == [("predict.normal", [job.id])]


@pytest.mark.usefixtures("cleanup")
def test_concurrent_submits_share_transactions_and_messages(
    engine: Engine, models: dict[str, ModelInfo]
) -> None:
    published = Published()
    committer = GroupCommitter(JobEnds(engine), published, max_group=64, linger=0.01)
    barrier = threading.Barrier(40)
    ids: list[str] = []

    def submit() -> None:
        barrier.wait()
        ids.append(committer.submit(_job(models)).id)

    threads = [threading.Thread(target=submit) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for _ in range(300):
        if sum(len(g) for _, g in published.groups) == 40:
            break
        threading.Event().wait(0.01)
    sent = [i for _, group in published.groups for i in group]
    assert sorted(sent) == sorted(ids) and len(set(ids)) == 40
    assert len(published.groups) < 40  # grouped: fewer messages than jobs
    with engine.connect() as conn:
        stored = conn.execute(select(jobs_table.c.id).where(jobs_table.c.tenant == TENANT))
        assert len(stored.all()) == 40


def test_database_down_raises_a_transient_error_and_publishes_nothing(
    tmp_path: Path, models: dict[str, ModelInfo]
) -> None:
    published = Published()
    broken = make_engine(f"sqlite:///{tmp_path}/missing-dir/db.sqlite")
    committer = GroupCommitter(JobEnds(broken), published)
    with pytest.raises(TransientError, match="unavailable"):
        committer.submit(_job(models))
    assert published.groups == []
    broken.dispose()
