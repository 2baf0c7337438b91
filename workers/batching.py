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
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from service.core.errors import ModelLoadError
from service.jobs import cache, lifecycle, recovery
from service.jobs.ending import Ending, JobEnds
from service.jobs.lifecycle import Claimed, Outcome
from service.models import registry
from service.models.modelinput import concat_batches
from service.ops import metrics
from service.store.db import not_durable
from workers.leases import LeaseKeeper
from workers.modelcore import ModelCache, RowFailed, first_failing_row, predict

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)


class Runner:
    """Runs batches of job ids for one worker process: its engine, models and metadata, and
    where its jobs end (`ends`: the after-commit hooks of the process)."""

    def __init__(self, engine: Engine, ends: JobEnds | None = None,
                 models: ModelCache | None = None, lease_seconds: float = 90.0,
                 max_attempts: int = 3, data_root: str = "", worker: str | None = None) -> None:
        self.engine = engine
        self.worker = worker  # host:pid, recorded by each claim for the job page
        self.ends = ends or JobEnds(engine)
        self.models = models or ModelCache()
        self.data_root = data_root  # where bulk jobs by reference read and write their files
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.leases = LeaseKeeper(engine, lease_seconds)
        self._infos: dict[int, registry.ModelInfo] = {}

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
            self._learn(info)
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
            outcomes = _with_retry(lambda: self._finish(computed, claimed)) if computed else []
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
            written = _with_retry(lambda: self._finish([outcome], [job]))
        return written[0] if written else None

    def _claim(self, ids: list[str]) -> tuple[list[Claimed], list[str]]:
        with self.ends.begin() as ending:
            not_durable(ending.conn)  # a lost claim is healed: see store.db.not_durable
            claimed = lifecycle.claim(ending.conn, ids, self.lease_seconds, self.worker)
            # The claim takes no job past its deadline: those of the rest never run. (Usually
            # every id is claimed, and this costs nothing.)
            taken = {job.id for job in claimed}
            expired = ending.expire([i for i in ids if i not in taken])
        return claimed, expired

    def _claim_expired(self, job_id: str) -> Claimed | None:
        """Take over a job whose worker died, or fail it if that was its last attempt (as the
        reconciler would: its attempt count stays at the limit)."""
        with self.ends.begin() as ending:
            if ending.fail_exhausted(self.max_attempts, [job_id]):
                return None
            return recovery.claim_expired(ending.conn, job_id, self.lease_seconds,
                                          self.max_attempts, self.worker)

    def _holding(self, claimed: Sequence[Claimed]) -> AbstractContextManager[None]:
        """Keep the claims' leases renewed while they are predicted and written."""
        held = [(job.id, job.attempts) for job in claimed]
        return self.leases.holding(
            lambda conn: lifecycle.renew_leases(conn, held, self.lease_seconds))

    def _finish(self, outcomes: Sequence[Outcome], claimed: Sequence[Claimed]
                ) -> list[Outcome]:
        """Write the outcomes still held by their claims, and return those written: each
        written job ends (`Ending.write_outcomes`); the others (taken over after this
        worker's lease ended, or cancelled) change nothing. A single row's result of a model
        that opted in is cached once committed."""
        by_id = {job.id: job for job in claimed}
        with self.ends.begin() as ending:
            written = ending.write_outcomes(outcomes, by_id)
            ending.predicted(sum(by_id[o.id].n_rows for o in written))
            for outcome in written:
                self._cache(ending, by_id[outcome.id], outcome)
        return written

    def _cache(self, ending: Ending, job: Claimed, outcome: Outcome) -> None:
        info = self._infos.get(job.model_id)
        if info is not None and info.cache_ttl and outcome.error is None and job.n_rows == 1:
            key = cache.cache_key(info, job.rows(info.schema))
            ending.cache(key, json.dumps(outcome.result), info.cache_ttl)

    def _learn(self, info: registry.ModelInfo) -> None:
        self._infos[info.id] = info
        self.ends.names.learn(info.id, info.name, info.version)

    def info(self, model_id: int) -> registry.ModelInfo:
        """A model version's metadata, cached for good: a version is immutable once registered."""
        if model_id not in self._infos:
            with self.engine.connect() as conn:
                self._learn(registry.by_id(conn, model_id))
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
        rows = concat_batches([job.rows(info.schema) for job in group])
        try:
            with metrics.PREDICT_DURATION.labels(info.name).time():
                out = predict(model, info, rows)
            return _split(group, out)
        except Exception as exc:  # noqa: BLE001 - find the job that broke the batch
            if len(group) == 1:
                return [_failed(group[0], first_failing_row(model, info, rows, exc))]
        return [self._predict_one(model, info, job) for job in group]

    def _predict_one(self, model: Any, info: registry.ModelInfo, job: Claimed) -> Outcome:
        rows = job.rows(info.schema)
        try:
            return _split([job], predict(model, info, rows))[0]
        except Exception as exc:  # noqa: BLE001 - one bad job fails alone, naming its row
            return _failed(job, first_failing_row(model, info, rows, exc))


def _failed(job: Claimed, failed: RowFailed) -> Outcome:
    column = f".{failed.column}" if failed.column else ""
    return Outcome(job.id, job.attempts,
                   error=f"prediction failed at inputs[{failed.row}]{column}: {failed.reason}")


def _split(group: Sequence[Claimed], out: dict[str, np.ndarray]) -> list[Outcome]:
    outcomes, start = [], 0
    for job in group:
        end = start + job.n_rows
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
