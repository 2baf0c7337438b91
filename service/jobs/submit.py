"""The one way a job comes in. The JSON endpoint, synchronous predict, bulk uploads and
schedules all call `Submitter`, which runs the same steps in the same order:

1. idempotency: a retry of a request that went through gets the job it created (or 422);
2. admission: a full queue, or a tenant's full share of it, is refused (429) before anything
   is written; a single row served from the prediction cache needs no queue slot;
3. quota: the rows count against the tenant's rows per minute (429, or 400 if they never fit);
4. insert: the job row is committed (small jobs through the group committer; an upload with
   its first chunk, so that workers predict it as it arrives, and its Idempotency-Key with its
   last, see `uploads`; a job by reference with all its chunk rows);
5. publish, or leave it to the reconciler;
6. metrics: jobs and rows submitted.

Inputs arrive already parsed against the model's signature (`inputs.parse_rows`, or a bulk
format's reader); nothing here knows Flask, Celery or a body format.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis
from sqlalchemy import Engine

from service.core.errors import InvalidInput
from service.core.messaging import CHUNK_TASK, Publisher, publish_or_defer
from service.core.settings import Settings
from service.core.states import JobStatus
from service.jobs import cache, chunks, idempotency, uploads
from service.jobs.admission import QueueGauge
from service.jobs.chunks import Reference
from service.jobs.committer import GroupCommitter
from service.jobs.lifecycle import JobRequest, KeyTaken, NewJob
from service.ops import heartbeats, metrics
from service.store.db import reader
from service.tenants.limits import Limits, Quotas, TenantLimits

log = logging.getLogger(__name__)


class RowQuota(Protocol):
    def take_rows(self, tenant: str, rows: int) -> None: ...


@dataclass(frozen=True)
class Accepted:
    """A submitted job: new (`replayed` False), or the one an earlier request with the same
    Idempotency-Key created."""

    id: str
    status: JobStatus
    model: str = ""  # name and version of a new job's model (a replay: read the job)
    version: str = ""
    replayed: bool = False


@dataclass(frozen=True)
class _Counted:
    """A bulk job as the job counters see it."""

    tenant: str
    model: str
    model_id: int
    n_rows: int
    needs_worker: bool = True


class Submitter:
    """Submits jobs for one process: its engine, committer, queue gauge and quotas. `engine`
    runs transactions (an upload's last chunk commits with the end of the upload: a worker
    that saw the chunk alone would finish the job's rows while it still reads as uploading,
    and the job would never end); its single-statement reads go through `reader(engine)`."""

    def __init__(self, engine: Engine, gauge: QueueGauge, quotas: RowQuota,
                 publish: Publisher | None, committer: GroupCommitter | None = None,
                 cache_client: redis.Redis | None = None, bulk_window: int = 4) -> None:
        self.engine = engine
        self.reads = reader(engine)
        self.gauge = gauge
        self.quotas = quotas
        self.publish = publish
        self.committer = committer
        self.cache_client = cache_client
        self.bulk_window = bulk_window
        self._pools: dict[str, tuple[float, int]] = {}  # queue -> (when read, pool processes)

    def window(self, queue: str) -> int:
        """Chunk messages of one bulk job out at once: two for every pool process of the live
        workers that read `queue` (at least `bulk_window`), so that one job keeps them all
        busy, each with its next chunk in hand while it predicts one; read from the workers'
        heartbeats every 5 s. Not Celery's whole prefetch (4 a process): an interactive job
        would wait behind every bulk chunk a process holds."""
        now = time.monotonic()
        seen = self._pools.get(queue)
        if self.cache_client is not None and (seen is None or now - seen[0] > 5):
            try:
                live = heartbeats.workers(self.cache_client)
            except redis.RedisError:
                live = []
            seen = (now, sum(w.identity.concurrency for w in live
                             if not w.stale and queue in w.identity.queues))
            self._pools[queue] = seen
        return max(self.bulk_window, (seen[1] if seen else 0) * 2)

    def rows(self, req: JobRequest, rows: np.ndarray, fingerprint: str = "",
             on_id: Callable[[str], None] | None = None) -> Accepted:
        """A job of a few rows, committed in a group with concurrent submissions. `on_id`
        learns the job's id before it is committed (a synchronous caller's wake-up)."""
        assert self.committer is not None, "small jobs go through the API's group committer"
        found = self._replay(req, lambda: fingerprint)
        if found is not None:
            return found
        _check_rows(len(rows))
        cached = None
        if self.cache_client is not None:
            cached = cache.cached_result(self.cache_client, req.model, rows)
        if cached is None:  # a cached answer takes no queue slot and no rows quota
            self.gauge.admit(req.queue, req.tenant)
            self.quotas.take_rows(req.tenant, len(rows))
        claim = idempotency.Claim(req.key, fingerprint) if req.key is not None else None
        job = NewJob.of(req, rows, cached, claim)
        if on_id is not None:
            on_id(job.id)
        try:
            self.committer.submit(job)  # commits, counts, then publishes
        except KeyTaken:  # a concurrent attempt with the same key committed first
            return self._after_race(req, fingerprint)
        _log_accepted(req, job.id, len(rows), not job.needs_worker)
        return Accepted(job.id, JobStatus.QUEUED if job.needs_worker else JobStatus.SUCCEEDED,
                        req.model.name, req.model.version)

    def chunks(self, req: JobRequest, matrices: Iterable[np.ndarray],
               fingerprint: Callable[[], str]) -> Accepted:
        """A bulk job: its rows stored chunk by chunk as they are parsed, and predicted by the
        workers as they arrive (`uploads`); each chunk's rows are charged to the tenant when
        it is read. `fingerprint` is asked once the input has been read (it may hash the
        body). On any error (a bad row, a quota) nothing is left behind."""
        found = self._replay(req, fingerprint)
        if found is not None:
            return found
        self.gauge.admit(req.queue, req.tenant)
        job_id = str(uuid.uuid4())
        window = self.window(req.queue)
        try:
            n_rows = n_chunks = 0
            held: np.ndarray | None = None  # the newest chunk: stored when the upload ends
            for matrix in matrices:
                self.quotas.take_rows(req.tenant, len(matrix))
                if held is not None:
                    with self.engine.begin() as conn:
                        sends = uploads.add(conn, job_id, req, n_chunks - 1, held, window)
                    self._send_chunks(req.queue, job_id, sends)
                held = matrix
                n_chunks += 1
                n_rows += len(matrix)
                time.sleep(0)  # parsing is CPU work: under gevent, let other requests in
            _check_rows(n_rows)
            assert held is not None
            claim = idempotency.Claim(req.key, fingerprint()) if req.key is not None else None
            with self.engine.begin() as conn:
                first = uploads.end(conn, job_id, req, n_chunks - 1, held, window, claim)
                if first is None:
                    uploads.discard(conn, job_id)
        except BaseException:
            with self.engine.begin() as conn:
                uploads.discard(conn, job_id)
            raise
        if first is None:
            return self._after_race(req, fingerprint())
        metrics.jobs_committed([_Counted(req.tenant, req.model.name, req.model.id, n_rows)])
        self._send_chunks(req.queue, job_id, first)
        _log_accepted(req, job_id, n_rows, False)
        return Accepted(job_id, JobStatus.QUEUED, req.model.name, req.model.version)

    def reference(self, req: JobRequest, ref: Reference, fingerprint: str) -> Accepted:
        """A bulk job by reference: its rows stay in the file (`ref` says where each chunk's
        are); admitted and charged like an upload, then its job and chunk rows committed in
        one transaction."""
        found = self._replay(req, lambda: fingerprint)
        if found is not None:
            return found
        _check_rows(ref.n_rows)
        self.gauge.admit(req.queue, req.tenant)
        self.quotas.take_rows(req.tenant, ref.n_rows)
        claim = idempotency.Claim(req.key, fingerprint) if req.key is not None else None
        job_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            inserted = chunks.insert_job(conn, job_id, req, ref.n_rows, len(ref.ranges), claim,
                                         ref)
            if inserted:
                chunks.add_ref_chunks(conn, job_id, ref.ranges)
                first = chunks.next_unsent(conn, job_id, self.window(req.queue))
        if not inserted:
            return self._after_race(req, fingerprint)
        metrics.jobs_committed([_Counted(req.tenant, req.model.name, req.model.id, ref.n_rows)])
        self._send_chunks(req.queue, job_id, first)
        _log_accepted(req, job_id, ref.n_rows, False)
        return Accepted(job_id, JobStatus.QUEUED, req.model.name, req.model.version)

    def _send_chunks(self, queue: str, job_id: str, seqs: list[int]) -> None:
        """One message per chunk, so that the window's chunks go to different pool processes
        (a message naming several runs them one after another in one process, while the
        others wait: the start of every job by reference did so)."""
        for seq in seqs:
            publish_or_defer(self.publish, CHUNK_TASK, queue, [chunks.chunk_id(job_id, seq)])

    def _replay(self, req: JobRequest, fingerprint: Callable[[], str]) -> Accepted | None:
        if req.key is None:
            return None
        with self.reads.connect() as conn:
            found = idempotency.find(conn, req.tenant, req.key)
        if found is None:
            return None
        return Accepted(idempotency.replay(found, req.key, fingerprint()), JobStatus.QUEUED,
                        replayed=True)

    def _after_race(self, req: JobRequest, fingerprint: str) -> Accepted:
        with self.reads.connect() as conn:
            job_id = idempotency.after_race(conn, req.tenant, req.key or "", fingerprint)
        return Accepted(job_id, JobStatus.QUEUED, replayed=True)


def make_submitter(settings: Settings, engine: Engine, client: redis.Redis,
                   publish: Publisher | None, committer: GroupCommitter | None = None,
                   quotas: Quotas | None = None) -> Submitter:
    """A Submitter with the settings' queue limits and tenant quotas (the API builds its quotas
    first: its request-rate hook shares them). `engine` must run transactions (not the
    autocommit `reader`)."""
    reads = reader(engine)
    if quotas is None:
        default = Limits(settings.rate_limit_rps, settings.rate_limit_rows_per_minute)
        quotas = Quotas(settings.redis_url, TenantLimits(reads, default))
    gauge = QueueGauge(reads, client, settings.queue_limits(), settings.tenant_queue_share,
                       settings.depth_refresh_interval)
    return Submitter(engine, gauge, quotas, publish, committer, client, settings.bulk_window)


def _check_rows(n_rows: int) -> None:
    if n_rows < 1:
        raise InvalidInput("inputs", "no rows: a job needs at least one")


def _log_accepted(req: JobRequest, job_id: str, rows: int, from_cache: bool) -> None:
    """One line per accepted job, after its commit (DEBUG: at a thousand jobs a second,
    INFO lines per job cost a tenth of the API's CPU)."""
    log.debug("job accepted", extra={
        "job_id": job_id, "tenant": req.tenant, "model": req.model.name,
        "version": req.model.version, "rows": rows, "queue": req.queue,
        "from_cache": from_cache})
