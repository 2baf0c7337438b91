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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import redis
from sqlalchemy import Engine

from service.core.errors import InvalidInput
from service.core.messaging import PREDICT_TASK, Publisher, publish_or_defer
from service.core.settings import Settings
from service.core.states import JobStatus
from service.core.times import utcnow
from service.jobs import cache, chunkstore, idempotency, retries, uploads
from service.jobs.admission import QueueGauge
from service.jobs.aftercommit import job_ends
from service.jobs.chunksize import ChunkSizer
from service.jobs.chunkstore import Reference
from service.jobs.committer import GroupCommitter
from service.jobs.ending import JobEnds
from service.jobs.lifecycle import KeyTaken, NewJob
from service.jobs.requests import JobRequest, RequestBuilder
from service.models.lookup import ModelLookup
from service.models.modelinput import Batch
from service.ops import metrics
from service.store.db import reader
from service.tenants.limits import Limits, Quotas, TenantLimits
from service.webhooks.safety import AllowList

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

    def __init__(self, engine: Engine, requests: RequestBuilder, gauge: QueueGauge,
                 quotas: RowQuota, publish: Publisher | None,
                 committer: GroupCommitter | None = None,
                 cache_client: redis.Redis | None = None,
                 ends: JobEnds | None = None,
                 sizer: ChunkSizer | None = None) -> None:
        self.engine = engine
        self.requests = requests  # every entry point's options become a JobRequest here
        self.ends = ends or JobEnds(engine)  # sends the bulk chunks the fair share gives a slot
        self.sizer = sizer or ChunkSizer(engine, 0.25)  # rows per chunk, by model
        self.reads = reader(engine)
        self.gauge = gauge
        self.quotas = quotas
        self.publish = publish
        self.committer = committer
        self.cache_client = cache_client

    def rows(self, req: JobRequest, rows: Batch, fingerprint: str = "",
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

    def chunks(self, req: JobRequest, matrices: Iterable[Batch],
               fingerprint: Callable[[], str]) -> Accepted:
        """A bulk job: its rows stored chunk by chunk as they are parsed, and predicted by the
        workers as they arrive (`uploads`); each chunk's rows are charged to the tenant when
        it is read. `fingerprint` is asked once the input has been read (it may hash the
        body). On any error (a bad row, a quota) nothing is left behind."""
        found = self._replay(req, fingerprint)
        if found is not None:
            return found
        self.gauge.admit(req.queue, req.tenant)
        job_id = req.job_id
        try:
            n_rows = n_chunks = 0
            held: Batch | None = None  # the newest chunk: stored when the upload ends
            for matrix in matrices:
                self.quotas.take_rows(req.tenant, len(matrix))
                if held is not None:  # stored, and sent if a slot is free, in one commit
                    self.ends.dispatch_with(partial(uploads.add, job_id=job_id, req=req,
                                                    seq=n_chunks - 1, rows=held))
                held = matrix
                n_chunks += 1
                n_rows += len(matrix)
                time.sleep(0)  # parsing is CPU work: under gevent, let other requests in
            _check_rows(n_rows)
            assert held is not None
            claim = idempotency.Claim(req.key, fingerprint()) if req.key is not None else None
            with self.engine.begin() as conn:
                ended = uploads.end(conn, job_id, req, n_chunks - 1, held, claim)
                if not ended:
                    uploads.discard(conn, job_id)
        except BaseException:
            with self.engine.begin() as conn:
                uploads.discard(conn, job_id)
            raise
        if not ended:
            return self._after_race(req, fingerprint())
        metrics.jobs_committed([_Counted(req.tenant, req.model.name, req.model.id, n_rows)])
        self.ends.redispatch()
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
        job_id = req.job_id
        with self.engine.begin() as conn:
            inserted = chunkstore.insert_job(conn, job_id, req, ref.n_rows, len(ref.ranges), claim,
                                         ref)
            if inserted:
                chunkstore.add_ref_chunks(conn, job_id, ref.ranges)
        if not inserted:
            return self._after_race(req, fingerprint)
        metrics.jobs_committed([_Counted(req.tenant, req.model.name, req.model.id, ref.n_rows)])
        self.ends.redispatch()
        _log_accepted(req, job_id, ref.n_rows, False)
        return Accepted(job_id, JobStatus.QUEUED, req.model.name, req.model.version)

    def retry(self, req: JobRequest, source: retries.Original, fingerprint: str) -> Accepted:
        """A retry of `source` (`req`: its options, checked): admitted and charged like any
        job, then its job row and any chunks committed in one transaction, their inputs
        copied as stored, naming `source` in `retry_of`."""
        req = replace(req, retry_of=source.id, input_format=source.input_format)
        found = self._replay(req, lambda: fingerprint)
        if found is not None:
            return found
        retries.check_version(req, self.requests.resolve(source.model, source.version))
        self.gauge.admit(req.queue, req.tenant)
        self.quotas.take_rows(req.tenant, source.n_rows)
        job_id, now = req.job_id, utcnow()
        key = [{"tenant": req.tenant, "key": req.key, "fingerprint": fingerprint,
                "job_id": job_id, "created_at": now}] if req.key is not None else []
        with self.engine.begin() as conn:
            if key and job_id not in idempotency.take(conn, key):
                return self._after_race(req, fingerprint)
            if source.kind == "rows":
                retries.copy_job(conn, source.id, job_id, req, now)
            else:
                chunkstore.insert_job(conn, job_id, req, source.n_rows, source.n_chunks,
                                      ref=source.reference())
                retries.copy_chunks(conn, source.id, job_id, now)
        metrics.jobs_committed([_Counted(req.tenant, req.model.name, req.model.id,
                                         source.n_rows)])
        if source.kind == "rows":
            publish_or_defer(self.publish, PREDICT_TASK, req.queue, [job_id])
        else:
            self.ends.redispatch()  # its chunks go out as the fair share gives them a slot
        _log_accepted(req, job_id, source.n_rows, False)
        return Accepted(job_id, JobStatus.QUEUED, req.model.name, req.model.version)

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
                   quotas: Quotas | None = None, models: ModelLookup | None = None,
                   ends: JobEnds | None = None) -> Submitter:
    """A Submitter with the settings' queue limits and tenant quotas (the API builds its quotas
    first: its request-rate hook shares them, and its model lookup, which its views share),
    and the bulk dispatch of the process's JobEnds (one of its own if none is given).
    `engine` must run transactions (not the autocommit `reader`)."""
    if ends is None:
        ends = job_ends(engine, client, publish, settings.webhook_max_inline_bytes,
                        min_slots=settings.bulk_window)
    reads = reader(engine)
    models = models or ModelLookup(reads)
    requests = RequestBuilder(models, reads,
                              AllowList.parse(settings.webhook_allow_hosts))
    if quotas is None:
        default = Limits(settings.rate_limit_rps, settings.rate_limit_rows_per_minute)
        quotas = Quotas(settings.redis_url, TenantLimits(reads, default))
    gauge = QueueGauge(reads, client, settings.queue_limits(), settings.tenant_queue_share,
                       settings.depth_refresh_interval)
    return Submitter(engine, requests, gauge, quotas, publish, committer, client, ends,
                     ChunkSizer(reads, settings.bulk_chunk_seconds))


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
