"""A job's end has one home: every path that moves a job to a final state goes through an
`Ending`, and what follows that commit is registered on it.

A worker's micro-batch, a bulk job's last chunk or its output file, a client's cancel, a
deadline, and the reconciler's sweeps each open `JobEnds.begin()`, call one of the final
transitions below (each one conditional UPDATE, so a second caller changes nothing), and
leave. The Ending records each ended job's webhook events in the same transaction (an outbox:
no crash can separate the two), and once the transaction commits the process's after-commit
hooks (`service/jobs/aftercommit.py`: metrics, wake-ups, publishing) run over what it ended
and what it asked to send, the way Warehouse sends tasks only from its transaction's
after-commit hook. Adding a final state or an effect of a job's end is done here and there.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, Update, and_, bindparam, func, select, update

from service.core.errors import Conflict, JobNotFound
from service.core.messaging import SHADOW_QUEUE, SHADOW_TASK
from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs.lifecycle import Claimed, Outcome
from service.ops import metrics
from service.store.db import job_chunks, jobs, models, over_rows
from service.webhooks import events as webhook_events

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
#: Largest result (JSON bytes) a webhook event carries inline; larger ones link to it.
MAX_INLINE = 256 * 1024


@dataclass(frozen=True)
class End:
    """One job that reached a final state in an Ending's transaction."""

    id: str
    tenant: str
    model_id: int
    status: JobStatus
    rows: int
    queue: str
    created_at: datetime | None = None
    request_id: str | None = None
    attempt: int = 0
    error: str | None = None
    bulk: bool = False
    model: str = ""  # name and version, filled in by the Ending (metrics, logs)
    version: str = ""
    shadow_model_id: int | None = None  # a single job's rollout shadow, run once it ends


# What an UPDATE that ends jobs returns, to build their `End`s without another query.
_FACTS = (jobs.c.id, jobs.c.tenant, jobs.c.model_id, jobs.c.n_rows, jobs.c.queue,
          jobs.c.created_at, jobs.c.request_id, jobs.c.attempts, jobs.c.n_chunks, jobs.c.error,
          jobs.c.status)


def _end_of(row: Row[Any]) -> End:
    return End(row.id, row.tenant, row.model_id, JobStatus(row.status), row.n_rows, row.queue,
               row.created_at, row.request_id, row.attempts, row.error,
               bulk=row.n_chunks is not None)


class ModelNames:
    """(name, version) by model id, for the metrics and logs of ended jobs: a version never
    changes once registered, so each is read once per process."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def learn(self, model_id: int, name: str, version: str) -> None:
        with self._lock:
            self._known[model_id] = (name, version)

    def named(self, conn: Connection, ends: Sequence[End]) -> list[End]:
        missing = {e.model_id for e in ends if e.model_id not in self._known}
        if missing:
            rows = conn.execute(select(models.c.id, models.c.name, models.c.version)
                                .where(models.c.id.in_(missing)))
            for model_id, name, version in rows:
                self.learn(model_id, name, version)
        return [replace(e, model=self._known.get(e.model_id, (str(e.model_id), ""))[0],
                        version=self._known.get(e.model_id, ("", ""))[1]) for e in ends]


@dataclass(frozen=True)
class Send:
    """A message to publish once the transaction has committed."""

    task: str
    queue: str
    ids: list[str]
    countdown: float | None = None


@dataclass
class Ending:
    """One transaction's job ends, and what must follow its commit."""

    conn: Connection
    max_inline: int = MAX_INLINE
    names: ModelNames = field(default_factory=ModelNames)
    ends: list[End] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # webhook events recorded, to publish
    sends: list[Send] = field(default_factory=list)
    cached: list[tuple[str, str, int]] = field(default_factory=list)  # (key, JSON, ttl)
    rows_predicted: int = 0  # by this transaction's work, for the worker's own figures
    frees_slots: bool = False  # a bulk chunk finished or a bulk job ended: dispatch again

    def ended(self, ends: Iterable[End]) -> list[End]:
        """Record jobs this transaction moved to a final state: their webhook events now, in
        the transaction; everything else after the commit."""
        new = self.names.named(self.conn, list(ends))
        if new:
            self.ends += new
            self.frees_slots |= any(e.bulk for e in new)
            self.events += webhook_events.record(self.conn, [e.id for e in new],
                                                 self.max_inline)
            # A shadow runs after its job's end: it never delays it, and reads its inputs
            # (lowest priority; lost with the broker, a shadow is not run again).
            self.send(SHADOW_TASK, SHADOW_QUEUE,
                      [e.id for e in new if e.shadow_model_id is not None])
        return new

    def send(self, task: str, queue: str, ids: Sequence[str],
             countdown: float | None = None) -> None:
        """Publish `ids` to `queue` after the commit (or leave them to the reconciler)."""
        if ids:
            self.sends.append(Send(task, queue, list(ids), countdown))

    def cache(self, key: str, value: str, ttl: int) -> None:
        """Serve a single row's result from the prediction cache, once it is committed."""
        self.cached.append((key, value, ttl))

    def predicted(self, rows: int) -> None:
        """Count rows whose predictions this transaction writes (a chunk, a batch)."""
        self.rows_predicted += rows

    @property
    def quiet(self) -> bool:
        return not (self.ends or self.sends or self.cached or self.rows_predicted
                    or self.frees_slots)

    # The final transitions. Each is one conditional UPDATE: run twice, or beside a late
    # redelivery, it ends nothing the second time.

    def cancel(self, tenant: str, job_id: str, by: str = "the client") -> End:
        """Cancel a queued or running job of `tenant` (single or bulk): no result is written
        afterwards, since every outcome is conditional on `running`. A finished job raises
        Conflict."""
        row = self.conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.tenant == tenant, jobs.c.status.in_(ACTIVE))
            .values(status=JobStatus.CANCELLED.value, finished_at=utcnow(), lease_until=None,
                    error=f"cancelled by {by}")
            .returning(*_FACTS)).first()
        if row is not None:
            return self.ended([_end_of(row)])[0]
        status = self.conn.execute(
            select(jobs.c.status).where(jobs.c.id == job_id, jobs.c.tenant == tenant)).scalar()
        if status is None:
            raise JobNotFound(job_id)
        raise Conflict(f"job {job_id} is already {status}; only a queued or running job can "
                       "be cancelled")

    def expire(self, job_ids: Iterable[str] | None = None, limit: int = 10_000) -> list[str]:
        """Mark queued jobs whose deadline passed `expired` (they never run); only `job_ids`
        if given, else any (the reconciler's sweep). Return the ids expired."""
        params: dict[str, Any] = {"now": utcnow()}
        if job_ids is not None:
            params["ids"] = list(job_ids)
            if not params["ids"]:
                return []
            stmt = _EXPIRE_IDS
        else:
            due = select(jobs.c.id).where(_OVERDUE).limit(limit)
            stmt = update(jobs).where(_OVERDUE, jobs.c.id.in_(due.scalar_subquery())) \
                .values(**_EXPIRED).returning(*_FACTS)
        return self._ended_by(stmt, params)

    def fail_exhausted(self, max_attempts: int, ids: Iterable[str] | None = None
                       ) -> list[str]:
        """Fail running single jobs (all, or those in `ids`) whose lease expired after
        `max_attempts` claims: each time, the worker running them died (poison input, out of
        memory), so they do not run again. Their attempt count stays `max_attempts`."""
        now = utcnow()
        only = [jobs.c.id.in_(list(ids))] if ids is not None else []
        stmt = (update(jobs)
                .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now,
                       jobs.c.attempts >= max_attempts, jobs.c.n_chunks.is_(None), *only)
                .values(status=JobStatus.FAILED.value, error=exhausted_error(max_attempts),
                        finished_at=now, lease_until=None)
                .returning(*_FACTS))
        return self._ended_by(stmt, {})

    def fail_bulk(self, job_id: str, error: str) -> bool:
        """Fail a queued or running bulk job (a chunk the model cannot predict, an output that
        cannot be written, a chunk whose worker died too often)."""
        stmt = (update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
                .values(status=JobStatus.FAILED.value, error=error, finished_at=utcnow())
                .returning(*_FACTS))
        return bool(self._ended_by(stmt, {}))

    def succeed_bulk(self, job_id: str) -> bool:
        """A running bulk job whose last chunk is done (`chunkclaims.finish` says so, holding
        its row) and its output file, if it has one, written, succeeds; its stored inputs go
        unless it keeps them (or a rollout's shadow still reads them: it drops each chunk's
        once answered, the retention sweep any it leaves)."""
        stmt = (update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
                                   jobs.c.uploading.is_(False))
                .values(status=JobStatus.SUCCEEDED.value, finished_at=utcnow())
                .returning(*_FACTS, jobs.c.keep_inputs, jobs.c.shadow_model_id))
        row = self.conn.execute(stmt).first()
        if row is None:
            return False
        if not row.keep_inputs and row.shadow_model_id is None:  # a shadow drops its own
            self.conn.execute(update(job_chunks).where(job_chunks.c.job_id == job_id)
                              .values(inputs=None))
        self.ended([_end_of(row)])
        return True

    def write_outcomes(self, outcomes: Sequence[Outcome], claimed: Mapping[str, Claimed]
                       ) -> list[Outcome]:
        """Write results and errors of running single jobs in one statement; return those
        written. Fenced: an outcome is written only while the claim that computed it (its
        attempt) holds the job, so a worker that wakes after its lease ended and another took
        the job over writes nothing; nor does one whose job was cancelled meanwhile."""
        if not outcomes:
            return []
        rows = [{"id": o.id, "attempts": o.attempt,
                 "status": (JobStatus.SUCCEEDED if o.error is None else JobStatus.FAILED).value,
                 "result": json.dumps(o.result) if o.error is None else None, "error": o.error}
                for o in outcomes]
        stmt, params = over_rows(self.conn, jobs, rows, _finish_from, now=utcnow())
        if isinstance(params, list):  # one execution per row (not PostgreSQL): each says
            done = {i for p in params for i in self.conn.execute(stmt, p).scalars()}
        else:
            done = set(self.conn.execute(stmt, params).scalars())
        written = [o for o in outcomes if o.id in done]
        if len(written) < len(outcomes):
            self._discarded([o for o in outcomes if o.id not in done])
        self.ended(_end_of_claim(claimed[o.id], o) for o in written)
        return written

    def _discarded(self, outcomes: Sequence[Outcome]) -> None:
        """Count and log outcomes their claims could not write: the job was taken over after
        this worker's lease ended (`claim_lost`), or it is no longer running."""
        attempts = dict(self.conn.execute(select(jobs.c.id, jobs.c.attempts)
                                          .where(jobs.c.id.in_([o.id for o in outcomes]))).all())
        for outcome in outcomes:
            held = attempts.get(outcome.id)
            reason = "claim_lost" if held is not None and held != outcome.attempt \
                else "not_running"
            metrics.RESULTS_DISCARDED.labels(reason).inc()
            log.info("discarded the outcome of job %s (attempt %d): %s", outcome.id,
                     outcome.attempt, "another worker took it over after this one's lease "
                     "ended" if reason == "claim_lost" else "it is no longer running",
                     extra={"job_id": outcome.id})

    def _ended_by(self, stmt: Any, params: dict[str, Any]) -> list[str]:
        ends = [_end_of(row) for row in self.conn.execute(stmt, params)]
        self.ended(ends)
        return [e.id for e in ends]


_OVERDUE = and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.deadline <= bindparam("now"))
_EXPIRED = {"status": JobStatus.EXPIRED.value, "finished_at": bindparam("now"),
            "error": "expired: not started before its deadline"}
_EXPIRE_IDS = (update(jobs).where(_OVERDUE, jobs.c.id.in_(bindparam("ids", expanding=True)))
               .values(**_EXPIRED).returning(*_FACTS))


def _finish_from(src: Any) -> Update:
    # PostgreSQL: one UPDATE ... FROM unnest(...) for the batch (`over_rows`).
    return update(jobs).where(
        jobs.c.id == src.id, jobs.c.status == JobStatus.RUNNING.value,
        jobs.c.attempts == src.attempts,
    ).values(status=src.status, result=func.coalesce(src.result, jobs.c.result),
             error=func.coalesce(src.error, jobs.c.error), finished_at=bindparam("now"),
             lease_until=None).returning(jobs.c.id)


def _end_of_claim(job: Claimed, outcome: Outcome) -> End:
    return End(job.id, job.tenant, job.model_id,
               JobStatus.FAILED if outcome.error else JobStatus.SUCCEEDED, job.n_rows,
               job.queue, job.created_at, job.request_id, job.attempts, outcome.error,
               shadow_model_id=job.shadow_model_id)


def exhausted_error(max_attempts: int) -> str:
    return (f"gave up after {max_attempts} attempts: the worker running this job died each "
            "time (an input that crashes the model, or not enough memory)")


AfterCommit = Callable[[Ending], None]
#: Statements run in a dispatch's transaction, before it (`JobEnds.dispatch_with`).
Work = Callable[[Connection], object]


def _no_dispatch(engine: Engine) -> Callable[[Work | None], int]:
    """No bulk dispatch composed: the work alone, in a transaction."""
    def run(work: Work | None) -> int:
        if work is not None:
            with engine.begin() as conn:
                work(conn)
        return 0
    return run


class JobEnds:
    """The process's home for job ends: its engine, and the hooks that run after every
    transaction an Ending made commits."""

    def __init__(self, engine: Engine, hooks: Sequence[AfterCommit] = (),
                 max_inline: int = MAX_INLINE) -> None:
        self.engine = engine
        self.hooks = list(hooks)
        self.max_inline = max_inline
        self.names = ModelNames()
        #: Sends the bulk chunks that have a slot (`dispatch`, set by the composition root),
        #: after running the given work in the same transaction; run after a commit that
        #: frees or fills a slot, or with the work that fills one.
        self.dispatcher: Callable[[Work | None], int] = _no_dispatch(engine)

    def redispatch(self) -> int:
        """Fill the free bulk slots, in a transaction of its own; a failure is logged (the
        next chunk's end, or the reconciler, dispatches again)."""
        try:
            return self.dispatcher(None)
        except Exception:  # noqa: BLE001 - the commits before this stand
            log.exception("bulk dispatch failed; the next one will send the chunks")
            return 0

    def dispatch_with(self, work: Work) -> int:
        """`work` (an upload's chunk stored), then the dispatch that may give it a slot, in one
        transaction: one commit where there were two. A failure of either rolls both back and
        is raised."""
        return self.dispatcher(work)

    @contextmanager
    def begin(self) -> Iterator[Ending]:
        """A transaction that may end jobs; the hooks run once it has committed (never if it
        rolled back)."""
        with self.engine.begin() as connection:
            ending = Ending(connection, self.max_inline, self.names)
            yield ending
        self.after_commit(ending)

    def after_commit(self, ending: Ending) -> None:
        """Run every hook over a committed Ending; a hook that fails is logged and the next
        one runs (the commit stands, and the reconciler heals what a hook left undone)."""
        if ending.quiet:
            return
        for hook in self.hooks:
            try:
                hook(ending)
            except Exception:  # noqa: BLE001 - after the commit nothing may undo it
                log.exception("after-commit step %s failed", getattr(hook, "__name__", hook))
