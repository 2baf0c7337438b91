"""The job lifecycle on a real database: conditional transitions make effects exactly once."""

from collections.abc import Iterator
from datetime import datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, delete, select, update

from service.core import times
from service.core.errors import JobNotFinished, JobNotFound
from service.core.states import JobStatus
from service.jobs import lifecycle, recovery, view
from service.jobs.ending import Ending
from service.jobs.lifecycle import NewJob, Outcome
from service.models.registry import ModelInfo
from service.models.schema import InputSchema
from service.store.db import jobs as jobs_table
from tests.support.ending import finish

TENANT = "jobs-domain"
LEASE = 60.0
MAX_ATTEMPTS = 3


@pytest.fixture
def job_id(engine: Engine, models: dict[str, ModelInfo]) -> Iterator[str]:
    job = NewJob(TENANT, models["iris"].id, np.array([[5.1, 3.5, 1.4, 0.2]])).with_id()
    with engine.begin() as conn:
        lifecycle.insert_jobs(conn, [job])
    yield job.id
    with engine.begin() as conn:
        conn.execute(delete(jobs_table).where(jobs_table.c.tenant == TENANT))


def _row(engine: Engine, job_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).mappings().one()
        return dict(row)


def test_claim_marks_running_and_returns_inputs(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        claimed = lifecycle.claim(conn, [job_id, "no-such-job"], LEASE)
    assert [(c.id, c.rows(InputSchema.numbers(["a", "b", "c", "d"])).tolist(), c.attempts)
            for c in claimed] == [
        (job_id, [[5.1, 3.5, 1.4, 0.2]], 1)
    ]
    assert _row(engine, job_id)["status"] == "running"


def test_redelivered_message_does_not_write_a_second_result(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:  # two deliveries of the same message, racing
        first = lifecycle.claim(conn, [job_id], LEASE)
        second = lifecycle.claim(conn, [job_id], LEASE)
        assert recovery.claim_expired(conn, job_id, LEASE, MAX_ATTEMPTS) is None  # lease valid
    assert first and second == []
    with engine.begin() as conn:
        assert finish(conn, [Outcome(job_id, 1, result={"predictions": ["setosa"]})]) == 1
    finished = _row(engine, job_id)
    with engine.begin() as conn:
        assert finish(conn, [Outcome(job_id, 1, result={"predictions": ["other"]})]) == 0
        assert finish(conn, [Outcome(job_id, 1, error="late failure")]) == 0
        assert lifecycle.claim(conn, [job_id], LEASE) == []  # a finished job is never claimed again
        assert recovery.claim_expired(conn, job_id, LEASE, MAX_ATTEMPTS) is None
    assert _row(engine, job_id) == finished
    assert finished["status"] == "succeeded"
    assert finished["attempts"] == 1
    assert finished["lease_until"] is None


def _expire(engine: Engine, job_id: str, attempts: int | None = None) -> None:
    """What time does to a dead worker's job: its lease runs out."""
    values: dict[str, object] = {"lease_until": times.utcnow() - timedelta(seconds=1)}
    if attempts is not None:
        values["attempts"] = attempts
    with engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(**values))


def test_a_job_whose_worker_died_is_claimed_again_once_its_lease_expires(
    engine: Engine, job_id: str
) -> None:
    with engine.begin() as conn:
        assert lifecycle.claim(conn, [job_id], LEASE)
    _expire(engine, job_id)
    with engine.begin() as conn:
        again = recovery.claim_expired(conn, job_id, LEASE, MAX_ATTEMPTS)
        assert again is not None and again.attempts == 2
        assert recovery.claim_expired(conn, job_id, LEASE, MAX_ATTEMPTS) is None  # new lease


def test_a_job_that_keeps_killing_workers_fails_after_max_attempts(
    engine: Engine, job_id: str
) -> None:
    with engine.begin() as conn:
        lifecycle.claim(conn, [job_id], LEASE)
    _expire(engine, job_id, attempts=2)
    with engine.begin() as conn:
        assert Ending(conn).fail_exhausted(max_attempts=3) == []
    _expire(engine, job_id, attempts=3)
    with engine.begin() as conn:
        assert Ending(conn).fail_exhausted(max_attempts=3) == [job_id]
        assert Ending(conn).fail_exhausted(max_attempts=3) == []
    row = _row(engine, job_id)
    assert row["status"] == "failed"
    assert row["error"].startswith("gave up after 3 attempts: the worker running this job died")


def test_a_redelivery_does_not_claim_a_job_past_its_last_attempt(
    engine: Engine, job_id: str
) -> None:
    # A late redelivery can meet the job before the reconciler fails it: the worker must fail
    # it too, not run it a fourth time and leave "attempts: 4" beside "gave up after 3".
    with engine.begin() as conn:
        lifecycle.claim(conn, [job_id], LEASE)
    _expire(engine, job_id, attempts=MAX_ATTEMPTS)
    with engine.begin() as conn:
        assert recovery.claim_expired(conn, job_id, LEASE, MAX_ATTEMPTS) is None
        assert Ending(conn).fail_exhausted(MAX_ATTEMPTS, ["another-job"]) == []
        assert Ending(conn).fail_exhausted(MAX_ATTEMPTS, [job_id]) == [job_id]
    row = _row(engine, job_id)
    assert (row["status"], row["attempts"]) == ("failed", MAX_ATTEMPTS)


def test_republish_takes_lost_queued_jobs_and_expired_leases_once_per_interval(
    engine: Engine, job_id: str, models: dict[str, ModelInfo]
) -> None:
    later = times.utcnow() + timedelta(seconds=5)
    with engine.begin() as conn:
        early = cut(times.utcnow() - timedelta(seconds=60))
        assert recovery.due_for_republish(conn, early, 100) == []
        assert (job_id, "predict.normal") in recovery.due_for_republish(conn, cut(later), 1000)
        # stamped: not due again until another interval has passed
        recent = times.utcnow() - timedelta(seconds=1)
        assert job_id not in dict(recovery.due_for_republish(conn, cut(recent), 1000))
    with engine.begin() as conn:
        lifecycle.claim(conn, [job_id], LEASE)
    with engine.begin() as conn:  # running under a valid lease: not lost
        assert job_id not in dict(recovery.due_for_republish(conn, cut(later), 1000))
    _expire(engine, job_id)
    with engine.begin() as conn:
        again = cut(later + timedelta(seconds=5))
        assert job_id in dict(recovery.due_for_republish(conn, again, 1000))


def cut(when: datetime) -> recovery.Cutoffs:
    return recovery.Cutoffs(when, when)


def test_on_an_empty_queue_a_message_counts_as_lost_sooner(engine: Engine, job_id: str) -> None:
    """Ten seconds after its message, a queued job is not yet lost on a busy queue (it may
    just be waiting), but it is on a queue that Redis holds nothing of."""
    now = times.utcnow() + timedelta(seconds=10)
    busy = recovery.Cutoffs.of(now, busy_after=60, idle_after=5)
    idle = recovery.Cutoffs.of(now, busy_after=60, idle_after=5, idle_queues={"predict.normal"})
    with engine.begin() as conn:  # (the database is shared: look for this job only)
        assert job_id not in dict(recovery.due_for_republish(conn, busy, 1000))
        assert dict(recovery.due_for_republish(conn, idle, 1000))[job_id] == "predict.normal"
        # stamped as sent just now: not lost again for another 5 seconds
        soon = recovery.Cutoffs.of(times.utcnow() + timedelta(seconds=4), 60, 5,
                                   {"predict.normal"})
        assert job_id not in dict(recovery.due_for_republish(conn, soon, 1000))


def test_finish_without_claim_changes_nothing(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        assert finish(conn, [Outcome(job_id, 1, result={"predictions": [1]})]) == 0
    assert _row(engine, job_id)["status"] == JobStatus.QUEUED


def test_result_of_an_unfinished_job_is_a_conflict_naming_its_status(
    engine: Engine, job_id: str
) -> None:
    with engine.connect() as conn, pytest.raises(JobNotFinished) as info:
        lifecycle.get_result(conn, TENANT, job_id)
    assert info.value.job_status == "queued"


def test_another_tenants_job_is_not_found(engine: Engine, job_id: str) -> None:
    with engine.connect() as conn:
        assert view.get(conn, TENANT, job_id)["status"] == "queued"
        with pytest.raises(JobNotFound):
            view.get(conn, "someone-else", job_id)
        with pytest.raises(JobNotFound):
            lifecycle.get_result(conn, "someone-else", job_id)


def test_final_states_are_final() -> None:
    assert {s for s in JobStatus if s.is_final} == {
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED
    }


def test_promotion_moves_a_waiting_job_up_one_level_per_interval(
    engine: Engine, models: dict[str, ModelInfo]
) -> None:
    job = NewJob(TENANT, models["iris"].id, np.array([[5.1, 3.5, 1.4, 0.2]]),
                 queue="predict.bulk").with_id()
    with engine.begin() as conn:
        lifecycle.insert_jobs(conn, [job])
    try:
        later = times.utcnow() + timedelta(seconds=1)
        with engine.begin() as conn:
            assert recovery.promote(conn, times.utcnow() - timedelta(seconds=30), 100) == []
            assert recovery.promote(conn, later, 100) == [(job.id, "predict.normal")]
            assert recovery.promote(conn, later - timedelta(seconds=1), 100) == []  # just moved
            assert recovery.promote(conn, later + timedelta(seconds=1), 100) == [
                (job.id, "predict.interactive")]
            assert recovery.promote(conn, later + timedelta(seconds=60), 100) == []  # the top
        assert _row(engine, job.id)["queue"] == "predict.interactive"
    finally:
        with engine.begin() as conn:
            conn.execute(delete(jobs_table).where(jobs_table.c.id == job.id))


def test_a_job_past_its_deadline_is_expired_not_claimed(engine: Engine, job_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == job_id)
                     .values(deadline=times.utcnow() - timedelta(seconds=1)))
        assert lifecycle.claim(conn, [job_id], LEASE) == []
        assert Ending(conn).expire([job_id]) == [job_id]
        assert Ending(conn).expire() == []  # once
    row = _row(engine, job_id)
    assert row["status"] == "expired" and row["attempts"] == 0


def test_cancel_is_conditional_and_scoped_to_the_tenant(engine: Engine, job_id: str) -> None:
    from service.core.errors import Conflict

    with engine.begin() as conn, pytest.raises(JobNotFound):
        Ending(conn).cancel("another-tenant", job_id)
    with engine.begin() as conn:
        lifecycle.claim(conn, [job_id], LEASE)
        Ending(conn).cancel(TENANT, job_id)  # running: cancelled all the same
        assert finish(conn, [Outcome(job_id, 1, result={"predictions": [1]})]) == 0
    with engine.begin() as conn, pytest.raises(Conflict):
        Ending(conn).cancel(TENANT, job_id)
    assert _row(engine, job_id)["status"] == "cancelled" and _row(engine, job_id)["result"] is None


def test_a_claim_that_lost_its_job_writes_nothing(engine: Engine, job_id: str) -> None:
    """Fencing: worker A's lease expired and worker B took the job over (attempt 2). A's late
    result is refused, whether B is still running it or has finished it."""
    with engine.begin() as conn:
        [first] = lifecycle.claim(conn, [job_id], LEASE)
    _expire(engine, job_id)
    with engine.begin() as conn:
        second = recovery.claim_expired(conn, job_id, LEASE, MAX_ATTEMPTS)
    assert second is not None and (first.attempts, second.attempts) == (1, 2)
    with engine.begin() as conn:
        assert lifecycle.renew_leases(conn, [(job_id, first.attempts)], LEASE) == 0
        assert lifecycle.renew_leases(conn, [(job_id, second.attempts)], LEASE) == 1
        assert finish(conn, [Outcome(job_id, first.attempts, error="A's late word")]) == 0
    assert _row(engine, job_id)["status"] == JobStatus.RUNNING
    with engine.begin() as conn:
        assert finish(conn, [Outcome(job_id, second.attempts,
                                          result={"predictions": ["setosa"]})]) == 1
        assert finish(conn, [Outcome(job_id, first.attempts, result={"x": 1})]) == 0
    assert _row(engine, job_id)["result"] == '{"predictions": ["setosa"]}'


def test_a_group_insert_keeps_every_field_of_every_job(
        engine: Engine, models: dict[str, ModelInfo]) -> None:
    """One statement for the group (arrays per column on PostgreSQL): each job's own values,
    NULLs and a cached result included, land in its own row."""
    deadline = times.utcnow() + timedelta(minutes=5)
    group = [
        NewJob(TENANT, models["iris"].id, np.array([[5.1, 3.5, 1.4, 0.2]]),
               deadline=deadline, webhook_url="https://example.com/hook", request_id="r-1"),
        NewJob(TENANT, models["iris"].id, np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]),
               retention=60),
        NewJob(TENANT, models["iris"].id, np.array([[6.0, 2.2, 5.0, 1.5]]),
               cached_result='{"predictions": ["virginica"]}'),
    ]
    group = [job.with_id() for job in group]
    try:
        with engine.begin() as conn:
            assert lifecycle.insert_jobs(conn, group) == [job.id for job in group]
        first, second, cached = (_row(engine, job.id) for job in group)
        assert (first["status"], first["n_rows"], first["webhook_url"], first["request_id"],
                first["retention"], first["from_cache"]) == (
            "queued", 1, "https://example.com/hook", "r-1", None, False)
        assert abs((times.as_utc(first["deadline"]) - deadline).total_seconds()) < 1e-3
        assert lifecycle.decode_inputs(second["inputs"], 2).tolist() == group[1].inputs.tolist()
        assert (second["deadline"], second["retention"], second["webhook_url"]) == (None, 60, None)
        assert (cached["status"], cached["result"], cached["from_cache"]) == (
            "succeeded", '{"predictions": ["virginica"]}', True)
        assert cached["finished_at"] is not None and first["finished_at"] is None
    finally:
        with engine.begin() as conn:
            conn.execute(delete(jobs_table).where(jobs_table.c.tenant == TENANT))


def test_one_finish_writes_results_and_errors_and_skips_stale_claims(
        engine: Engine, models: dict[str, ModelInfo]) -> None:
    group = [NewJob(TENANT, models["iris"].id, np.array([[5.1, 3.5, 1.4, 0.2]])).with_id()
             for _ in range(3)]
    ok, bad, stale = (job.id for job in group)
    try:
        with engine.begin() as conn:
            lifecycle.insert_jobs(conn, group)
            assert len(lifecycle.claim(conn, [ok, bad, stale], LEASE)) == 3
        with engine.begin() as conn:  # one batch: a result, an error, a claim that lost its job
            assert finish(conn, [
                Outcome(ok, 1, result={"predictions": ["setosa"]}),
                Outcome(bad, 1, error="predict failed: bad input"),
                Outcome(stale, 2, result={"predictions": ["never"]}),
            ]) == 2
        assert (_row(engine, ok)["status"], _row(engine, ok)["result"],
                _row(engine, ok)["error"]) == ("succeeded", '{"predictions": ["setosa"]}', None)
        assert (_row(engine, bad)["status"], _row(engine, bad)["result"],
                _row(engine, bad)["error"]) == ("failed", None, "predict failed: bad input")
        assert (_row(engine, stale)["status"], _row(engine, stale)["result"]) == ("running", None)
        assert all(_row(engine, i)["lease_until"] is None for i in (ok, bad))
    finally:
        with engine.begin() as conn:
            conn.execute(delete(jobs_table).where(jobs_table.c.tenant == TENANT))
