"""The micro-batching predict task: claim, group by model version, one predict() per group."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import numpy as np
import redis
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError, OperationalError

from service.core import times
from service.core.errors import ModelLoadError
from service.core.messaging import DELIVER_TASK, WEBHOOK_QUEUE, Publisher, publish_or_defer
from service.core.states import JobStatus
from service.jobs import cache, recovery, wakeups
from service.jobs import lifecycle as jobs
from service.jobs.lifecycle import Claimed, Outcome
from service.models import registry
from service.ops import heartbeats, metrics
from service.store.db import jobs as job_rows
from service.webhooks import events as webhook_events
from workers.leases import LeaseKeeper
from workers.modelcore import ArtifactSource, ModelCache, predict

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)


class Runner:
    """Runs batches of job ids for one worker process: its engine, models and metadata."""

    def __init__(self, engine: Engine, cache_size: int = 8, lease_seconds: float = 90.0,
                 max_attempts: int = 3, announcer: redis.Redis | None = None,
                 publish: Publisher | None = None,
                 webhook_max_inline: int = 256 * 1024,
                 tally: heartbeats.Tally | None = None, model_dir: str | None = None,
                 data_root: str = "") -> None:
        self.engine = engine
        self.data_root = data_root  # where bulk jobs by reference read and write their files
        self.tally = tally  # jobs and rows finished, for the dashboard's workers
        self.announcer = announcer  # wake-ups, prediction cache and counters; None: none
        self.publish = publish  # sends webhook event ids to their queue; None: the sweep does
        self.webhook_max_inline = webhook_max_inline
        # Artifacts: the registered path, else this host's copy or the store (model_dir set).
        self.models = ModelCache(cache_size) if model_dir is None else \
            ModelCache(cache_size, ArtifactSource(engine, model_dir).read)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.leases = LeaseKeeper(engine, lease_seconds)
        self._infos: dict[int, registry.ModelInfo] = {}
        self._events: list[str] = []  # webhook events committed, not yet published

    def adopt(self, other: Runner) -> None:
        """Start with the models and metadata `other` loaded (the main process's runner, before
        the fork)."""
        self.models.adopt(other.models)
        self._infos.update(other._infos)

    def preload(self, limit: int) -> int:
        """Load the `limit` most recently registered model versions not loaded yet; return
        how many it loaded."""
        with self.engine.connect() as conn:
            infos = sorted(registry.list_models(conn), key=lambda info: info.id)[-limit:]
        loaded = 0
        for info in infos:
            self._infos[info.id] = info
            if info.id in self.models:
                continue
            try:
                self.models.get(info)
                loaded += 1
            except ModelLoadError as exc:
                log.warning("not preloading %s %s: %s", info.name, info.version, exc.message)
        return loaded

    def run(self, job_ids: Iterable[str]) -> list[Outcome]:
        """Claim the jobs, predict them, commit their outcomes; return what was written.

        Queued jobs run as one micro-batch. A running job whose lease expired lost its worker,
        perhaps to its own input: it is claimed, predicted and committed alone, after the batch,
        so it cannot take its neighbours down with it again."""
        ids = list(dict.fromkeys(job_ids))
        claimed, expired = _with_retry(lambda: self._claim(ids))
        metrics.batch_claimed(len(claimed))
        by_model: dict[int, list[Claimed]] = defaultdict(list)
        for job in claimed:
            by_model[job.model_id].append(job)
        with self._holding(claimed):
            computed = [o for model_id, group in by_model.items()
                        for o in self._predict_group(model_id, group)]
            outcomes = _with_retry(lambda: self._finish(computed)) if computed else []
        self._announce(claimed, outcomes, expired)
        self._send_events()
        taken = {job.id for job in claimed} | set(expired)
        skipped = []
        for job_id in (i for i in ids if i not in taken):
            outcome = self._run_expired(job_id)
            if outcome is None:
                skipped.append(job_id)
            else:
                outcomes.append(outcome)
        if skipped:
            log.info("skipped finished, running or unknown jobs (redelivery?): %s",
                     " ".join(skipped[:20]))
        return outcomes

    def _run_expired(self, job_id: str) -> Outcome | None:
        job = _with_retry(lambda: self._claim_expired(job_id))
        if job is None:
            return None
        log.warning("job %s lost its worker; attempt %d runs alone", job.id, job.attempts,
                    extra={"job_id": job.id, "tenant": job.tenant,
                           "request_id": job.request_id})
        with self._holding([job]):
            outcome = self._predict_group(job.model_id, [job])[0]
            written = _with_retry(lambda: self._finish([outcome]))
        self._announce([job], written, [])
        self._send_events()
        return written[0] if written else None

    def _claim(self, ids: list[str]) -> tuple[list[Claimed], list[str]]:
        with self.engine.begin() as conn:
            claimed = jobs.claim(conn, ids, self.lease_seconds)
            # The claim takes no job past its deadline: those of the rest never run. (Usually
            # every id is claimed, and this costs nothing.)
            taken = {job.id for job in claimed}
            expired = jobs.expire(conn, [i for i in ids if i not in taken])
            events = webhook_events.record(conn, expired, self.webhook_max_inline)
            ended = jobs.labels_of(conn, expired)
        self._events += events  # committed
        metrics.jobs_ended(ended)
        return claimed, expired

    def _send_events(self) -> None:
        """Publish the webhook events the last transactions wrote; if this fails (or the
        process dies first), the reconciler's sweep of the outbox sends them."""
        events, self._events = self._events, []
        publish_or_defer(self.publish, DELIVER_TASK, WEBHOOK_QUEUE, events)

    def _announce(self, claimed: Sequence[Claimed], outcomes: Sequence[Outcome],
                  expired: Sequence[str]) -> None:
        """After the commit: wake synchronous callers, count what left each queue, and cache
        single-row results of models that opted in."""
        self._count(claimed, outcomes)
        if self.announcer is None or not (claimed or expired):
            return
        drained: dict[str, int] = defaultdict(int)
        for job in claimed:
            drained[job.queue] += 1
        by_id = {job.id: job for job in claimed}
        entries: list[tuple[str, str, int]] = []
        for outcome in outcomes:
            job = by_id[outcome.id]
            ttl = self._infos[job.model_id].cache_ttl if job.model_id in self._infos else None
            if ttl and outcome.error is None and len(job.inputs) == 1:
                key = cache.cache_key(self._infos[job.model_id], job.inputs[0])
                entries.append((key, json.dumps(outcome.result), ttl))
        done = [o.id for o in outcomes] + list(expired)
        wakeups.after_batch(self.announcer, done, drained, entries)

    def _count(self, claimed: Sequence[Claimed], outcomes: Sequence[Outcome]) -> None:
        """Metrics of committed outcomes: jobs finished, and their submit-to-result time."""
        by_id = {job.id: job for job in claimed}
        now = times.utcnow()
        if self.tally is not None:
            self.tally.add(len(outcomes), sum(len(by_id[o.id].inputs) for o in outcomes))
        for outcome in outcomes:
            job = by_id[outcome.id]
            info = self._infos.get(job.model_id)
            name = info.name if info else str(job.model_id)
            metrics.job_finished(name, job.tenant, outcome.error is not None, job.created_at, now,
                                 len(job.inputs))
            # A failure is worth a warning; a success is a DEBUG line (one per job is costly).
            log.log(logging.WARNING if outcome.error else logging.DEBUG, "job finished", extra={
                "job_id": job.id, "tenant": job.tenant, "request_id": job.request_id,
                "model": name, "version": info.version if info else None,
                "status": "failed" if outcome.error else "succeeded", "rows": len(job.inputs),
                "attempt": job.attempts, "error": outcome.error})

    def _claim_expired(self, job_id: str) -> Claimed | None:
        """Take over a job whose worker died, or fail it if that was its last attempt (as the
        reconciler would: its attempt count stays at the limit)."""
        with self.engine.begin() as conn:
            failed = recovery.fail_exhausted(conn, self.max_attempts, [job_id])
            if not failed:
                return recovery.claim_expired(conn, job_id, self.lease_seconds,
                                              self.max_attempts)
            events = webhook_events.record(conn, failed, self.webhook_max_inline)
            ended = jobs.labels_of(conn, failed)
        self._events += events  # committed
        metrics.jobs_ended(ended)
        if self.announcer is not None:
            wakeups.after_batch(self.announcer, failed, {}, [])
        self._send_events()
        return None

    def _holding(self, claimed: Sequence[Claimed]) -> AbstractContextManager[None]:
        """Keep the claims' leases renewed while they are predicted and written."""
        held = [(job.id, job.attempts) for job in claimed]
        return self.leases.holding(
            lambda conn: jobs.renew_leases(conn, held, self.lease_seconds))

    def _finish(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """Write the outcomes still held by their claims; return those written. The others
        (the job was taken over after this worker's lease ended, or cancelled) are logged
        and counted, and change nothing."""
        with self.engine.begin() as conn:
            changed = jobs.finish(conn, outcomes)
            written = list(outcomes) if changed == len(outcomes) else \
                self._written(conn, outcomes)
            # In the same transaction as the final states: no crash can separate the two.
            events = webhook_events.record(conn, [o.id for o in written],
                                           self.webhook_max_inline)
        self._events += events  # committed
        return written

    @staticmethod
    def _written(conn: Connection, outcomes: Sequence[Outcome]) -> list[Outcome]:
        rows = {row.id: row for row in conn.execute(
            select(job_rows.c.id, job_rows.c.status, job_rows.c.attempts)
            .where(job_rows.c.id.in_([o.id for o in outcomes])))}
        written = []
        for outcome in outcomes:
            row = rows.get(outcome.id)
            if row is not None and row.attempts == outcome.attempt and \
                    row.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
                written.append(outcome)
                continue
            reason = "claim_lost" if row is not None and row.attempts != outcome.attempt \
                else "not_running"
            metrics.RESULTS_DISCARDED.labels(reason).inc()
            log.warning("discarded the outcome of job %s (attempt %d): %s", outcome.id,
                        outcome.attempt,
                        "another worker took it over after this one's lease ended"
                        if reason == "claim_lost" else "it is no longer running",
                        extra={"job_id": outcome.id})
        return written

    def info(self, model_id: int) -> registry.ModelInfo:
        """A model version's metadata, cached for good: a version is immutable once registered."""
        if model_id not in self._infos:
            with self.engine.connect() as conn:
                self._infos[model_id] = registry.by_id(conn, model_id)
        return self._infos[model_id]

    def _predict_group(self, model_id: int, group: list[Claimed]) -> list[Outcome]:
        try:
            info = self.info(model_id)
            model = self.models.get(info)
        except ModelLoadError as exc:
            log.error("model %s cannot be loaded: %s", model_id, exc)
            return [Outcome(job.id, job.attempts, error=exc.message) for job in group]
        except (OperationalError, DBAPIError):
            raise  # the store is down: handled (and retried) by the caller
        except Exception as exc:  # noqa: BLE001 - e.g. the pickle names a module not installed
            log.error("model %s cannot be loaded: %s: %s", model_id, type(exc).__name__, exc)
            message = f"the model cannot be loaded: {type(exc).__name__}: {exc}"
            return [Outcome(job.id, job.attempts, error=message) for job in group]
        try:
            rows = np.concatenate([job.inputs for job in group])
            with metrics.PREDICT_DURATION.labels(info.name).time():
                out = predict(model, info, rows)
            return _split(group, out)
        except Exception as exc:  # noqa: BLE001 - find the job that broke the batch
            if len(group) == 1:
                return [_failed(group[0], exc)]
        return [self._predict_one(model, info, job) for job in group]

    def _predict_one(self, model: Any, info: registry.ModelInfo, job: Claimed) -> Outcome:
        try:
            return _split([job], predict(model, info, job.inputs))[0]
        except Exception as exc:  # noqa: BLE001 - one bad job fails alone
            return _failed(job, exc)


def _failed(job: Claimed, exc: Exception) -> Outcome:
    return Outcome(job.id, job.attempts,
                   error=f"prediction failed: {type(exc).__name__}: {exc}")


def _split(group: Sequence[Claimed], out: dict[str, np.ndarray]) -> list[Outcome]:
    outcomes, start = [], 0
    for job in group:
        end = start + len(job.inputs)
        outcomes.append(Outcome(job.id, job.attempts,
                                result={k: v[start:end].tolist() for k, v in out.items()}))
        start = end
    return outcomes


def _with_retry(fn: Callable[[], T]) -> T:
    """Retry a database step with back-off; a worker does not give up on a brief outage."""
    for delay in RETRY_DELAYS:
        try:
            return fn()
        except OperationalError as exc:
            log.warning("database unavailable (%s); retrying in %.1fs", exc.orig, delay)
            time.sleep(delay)
    return fn()
