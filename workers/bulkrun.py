"""Bulk jobs on a worker: one chunk per message, claimed, predicted and committed alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from service.bulk import refread
from service.core import times
from service.core.errors import ModelLoadError, PredqError
from service.core.messaging import (
    CHUNK_TASK,
    DELIVER_TASK,
    WEBHOOK_QUEUE,
    Publisher,
    publish_or_defer,
)
from service.core.states import JobStatus
from service.jobs import chunks, wakeups
from service.ops import metrics
from service.webhooks import events as webhook_events
from workers.batching import Runner
from workers.modelcore import predict

log = logging.getLogger(__name__)


class ChunkRunner:
    """Uses the process's Runner for its engine, models and announcements."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def run(self, chunk_ids: Iterable[str], publish: Publisher | None) -> int:
        done = 0
        for text in chunk_ids:
            parsed = chunks.parse_chunk_id(text)
            if parsed is None:
                log.error("dropping malformed chunk id %.100r", text)
                continue
            done += self._run_one(*parsed, publish)
        return done

    def _run_one(self, job_id: str, seq: int, publish: Publisher | None) -> int:
        engine, runner = self.runner.engine, self.runner
        with engine.begin() as conn:
            claimed = chunks.claim(conn, job_id, seq, runner.lease_seconds)
            output = chunks.awaiting_output(conn, job_id) if claimed is None else None
        if output is not None:  # sent again: the worker writing the file died
            self._write_output(job_id, output, publish)
            return 0
        if claimed is None:
            return 0  # done already, held by a live worker, or its job ended
        renew = lambda conn: chunks.renew_lease(conn, claimed, runner.lease_seconds)  # noqa: E731
        with runner.leases.holding(renew):
            return self._work(claimed, publish)

    def _work(self, claimed: chunks.ClaimedChunk, publish: Publisher | None) -> int:
        """Predict a claimed chunk and write it, or fail its job, while the claim holds."""
        engine, runner = self.runner.engine, self.runner
        job_id, seq = claimed.job_id, claimed.seq
        name = str(claimed.model_id)
        try:
            info = runner.info(claimed.model_id)
            name = info.name
            model = runner.models.get(info)
            if claimed.inputs is None:  # by reference: this worker reads its rows
                claimed = replace(claimed, inputs=refread.read_chunk(
                    runner.data_root, claimed.source or "", claimed.start, claimed.stop, info))
            with metrics.PREDICT_DURATION.labels(info.name).time():
                out = predict(model, info, claimed.rows) if len(claimed.rows) else \
                    {"predictions": np.empty(0)}
        except Exception as exc:  # noqa: BLE001 - the job fails, naming the chunk
            reason = exc.message if isinstance(exc, ModelLoadError | PredqError) else \
                f"{type(exc).__name__}: {exc}"
            with engine.begin() as conn:
                failed = chunks.holds(conn, claimed) and chunks.fail(
                    conn, job_id, f"prediction failed in chunk {seq}: {reason}")
                events = webhook_events.record(conn, [job_id] if failed else [],
                                               runner.webhook_max_inline)
            if failed:
                self._count(claimed, name, failed=True)
                if runner.tally is not None:
                    runner.tally.add(1, 0)
            self._ended(job_id, events, publish)
            return 0
        with engine.begin() as conn:
            done = chunks.finish(conn, claimed, out)
            status = done.status if done else None
            following = chunks.next_unsent(conn, job_id, 1) if status == "running" else []
            events = webhook_events.record(conn, [job_id], runner.webhook_max_inline) \
                if status == JobStatus.SUCCEEDED.value else []
        if done is None:
            metrics.RESULTS_DISCARDED.labels("claim_lost").inc()
            log.warning("discarded chunk %d of job %s (attempt %d): this worker's claim no "
                        "longer holds it, or the job ended", seq, job_id, claimed.attempt,
                        extra={"job_id": job_id})
        else:
            publish_or_defer(publish, CHUNK_TASK, done.queue,
                             [chunks.chunk_id(job_id, s) for s in following])
        if status == JobStatus.SUCCEEDED.value:
            self._count(claimed, name, failed=False)
            self._ended(job_id, events, publish)
        if status and runner.tally is not None:  # rows chunk by chunk; the job once, at its end
            runner.tally.add(int(status == JobStatus.SUCCEEDED.value), len(claimed.rows))
        if done is not None and done.output is not None:
            self._write_output(job_id, done.output, publish, claimed, name)
        return len(claimed.rows) if status else 0

    def _write_output(self, job_id: str, output: str, publish: Publisher | None,
                      claimed: chunks.ClaimedChunk | None = None, name: str = "") -> None:
        """Every chunk is done: write the result file, then the job succeeds. A failure to
        write fails the job, naming the file."""
        engine, runner = self.runner.engine, self.runner
        try:
            refread.write_output(engine, runner.data_root, job_id, output)
            error = None
        except Exception as exc:  # noqa: BLE001 - the job fails, naming the file
            reason = exc.message if isinstance(exc, PredqError) else f"{type(exc).__name__}: {exc}"
            error = f"could not write the output {output}: {reason}"
        with engine.begin() as conn:
            ended = chunks.complete(conn, job_id) if error is None else \
                chunks.fail(conn, job_id, error)
            if ended and error is None and not chunks.keeps_inputs(conn, job_id):
                chunks.drop_inputs(conn, job_id)
            events = webhook_events.record(conn, [job_id] if ended else [],
                                           runner.webhook_max_inline)
        if not ended:
            return
        if claimed is not None:
            self._count(claimed, name, failed=error is not None)
        if runner.tally is not None:
            runner.tally.add(1, 0)
        self._ended(job_id, events, publish)

    @staticmethod
    def _count(chunk: chunks.ClaimedChunk, model: str, failed: bool) -> None:
        metrics.job_finished(model, chunk.tenant, failed, chunk.created_at, times.utcnow(),
                             chunk.job_rows)

    def _ended(self, job_id: str, events: list[str], publish: Publisher | None
               ) -> None:
        if self.runner.announcer is not None:
            try:
                wakeups.announce_done(self.runner.announcer, [job_id])
            except Exception as exc:  # noqa: BLE001 - pollers still see it
                log.warning("could not announce %s: %s", job_id, exc)
        publish_or_defer(publish, DELIVER_TASK, WEBHOOK_QUEUE, events)
