"""Bulk jobs on a worker: one chunk per message, claimed, predicted and committed alone."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from service.bulk import outputs, refread
from service.bulk.areas import scrub
from service.bulk.refs import Source
from service.core.errors import ModelLoadError, PredqError
from service.core.messaging import CHUNK_SHADOW_QUEUE, SHADOW_TASK, chunk_id, parse_chunk_id
from service.jobs import chunkclaims
from service.jobs.chunkclaims import ClaimedChunk, Progress
from service.jobs.ending import Ending
from service.models import costs
from service.ops import metrics
from service.store.db import not_durable
from workers.batching import Runner
from workers.modelcore import RowFailed, first_failing_row, predict

log = logging.getLogger(__name__)


class ChunkRunner:
    """Uses the process's Runner for its engine, models and job ends."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def run(self, chunk_ids: Iterable[str]) -> int:
        """Predict and commit each chunk named; return the rows written."""
        done = 0
        for text in chunk_ids:
            parsed = parse_chunk_id(text)
            if parsed is None:
                log.error("dropping malformed chunk id %.100r", text)
                continue
            done += self._run_one(*parsed)
        return done

    def _run_one(self, job_id: str, seq: int) -> int:
        runner = self.runner
        with runner.engine.begin() as conn:
            not_durable(conn)  # a lost claim is healed: see store.db.not_durable
            claimed = chunkclaims.claim(conn, job_id, seq, runner.lease_seconds, runner.worker)
            output = chunkclaims.awaiting_output(conn, job_id) if claimed is None else None
        if output is not None:  # sent again: the worker writing the file died
            self._write_output(job_id, output)
            return 0
        if claimed is None:
            return 0  # done already, held by a live worker, or its job ended
        held = claimed
        renew = lambda conn: chunkclaims.renew_lease(conn, held, runner.lease_seconds)  # noqa: E731
        with runner.leases.holding(renew):
            return self._work(claimed)

    def _work(self, claimed: ClaimedChunk) -> int:
        """Predict a claimed chunk and write it, or fail its job, while the claim holds."""
        runner = self.runner
        model: Any = None
        try:
            info = runner.info(claimed.model_id)
            model = runner.models.get(info)
            if claimed.stored is not None:
                claimed = claimed.with_rows(claimed.decode(info.schema))
            else:  # by reference: this worker reads its rows
                claimed = claimed.with_rows(refread.read_chunk(
                    runner.data_root, claimed.source or "", claimed.start, claimed.stop, info))
            began = time.perf_counter()
            out = predict(model, info, claimed.rows) if len(claimed.rows) else \
                {"predictions": np.empty(0)}
            took = time.perf_counter() - began
            metrics.PREDICT_DURATION.labels(info.name).observe(took)
        except Exception as exc:  # noqa: BLE001 - the job fails, naming the chunk
            if model is not None and claimed.inputs is not None and \
                    not isinstance(exc, PredqError):
                error = self._row_error(claimed, first_failing_row(model, info, claimed.rows,
                                                                   exc))
            else:
                reason = exc.message if isinstance(exc, ModelLoadError | PredqError) else \
                    f"{type(exc).__name__}: {exc}"
                error = f"prediction failed in chunk {claimed.seq}: {reason}"
            with runner.ends.begin() as ending:
                if chunkclaims.holds(ending.conn, claimed):
                    ending.fail_bulk(claimed.job_id, scrub(error, runner.data_root))
            return 0
        with runner.ends.begin() as ending:
            progress = chunkclaims.finish(ending.conn, claimed, out)
            if progress is not None:
                ending.predicted(len(claimed.rows))
                if claimed.shadow_model_id is not None:  # its shadow, after the chunks
                    ending.send(SHADOW_TASK, CHUNK_SHADOW_QUEUE,
                                [chunk_id(claimed.job_id, claimed.seq)])
                costs.observe(ending.conn, claimed.model_id, took, len(claimed.rows))
                self._follow(ending, claimed.job_id, progress)
        if progress is None:
            metrics.RESULTS_DISCARDED.labels("claim_lost").inc()
            log.info("discarded chunk %d of job %s (attempt %d): this worker's claim no longer "
                     "holds it (taken over after its lease ended), or the job ended",
                     claimed.seq, claimed.job_id, claimed.attempt,
                     extra={"job_id": claimed.job_id})
            return 0
        if progress.output is not None:
            self._write_output(claimed.job_id, progress.output)
        return len(claimed.rows)

    def _row_error(self, claimed: ClaimedChunk, failed: RowFailed) -> str:
        """The job's error naming the row the model failed on (and its column, when known):
        its number in the job, or, for a CSV read by reference (whose chunks' rows are known
        only once read), its number in the chunk and where the chunk's lines are."""
        column = f", column {failed.column!r}" if failed.column else ""
        source = Source.loads(claimed.source) if claimed.source else None
        if source is not None and source.format == "csv":
            where = (f"row {failed.row + 1:,} of chunk {claimed.seq} (the lines in bytes "
                     f"{claimed.start}-{claimed.stop} of {source.name})")
            return f"prediction failed at {where}{column}: {failed.reason}"
        if source is not None and source.format == "npy":
            before = claimed.start  # the chunk's first row in the file
        else:
            with self.runner.engine.connect() as conn:
                before = chunkclaims.rows_before(conn, claimed)
        where = f"row {before + failed.row + 1:,} (chunk {claimed.seq})"
        return f"prediction failed at {where}{column}: {failed.reason}"

    @staticmethod
    def _follow(ending: Ending, job_id: str, progress: Progress) -> None:
        """After a chunk: the job ends with it; either way its slot goes to the next chunk
        the dispatch chooses, once this commits."""
        ending.frees_slots = True
        if progress.ends_job:
            ending.succeed_bulk(job_id)

    def _write_output(self, job_id: str, output: str) -> None:
        """Every chunk is done: write the result file, then the job succeeds. A failure to
        write fails the job, naming the file."""
        runner = self.runner
        try:
            outputs.write_output(runner.engine, runner.data_root, job_id)
            error = None
        except Exception as exc:  # noqa: BLE001 - the job fails, naming the file
            reason = exc.message if isinstance(exc, PredqError) else f"{type(exc).__name__}: {exc}"
            error = (f"could not write the output {outputs.shown(output)}: "
                     + scrub(reason, runner.data_root))
        with runner.ends.begin() as ending:
            if error is None:
                ending.succeed_bulk(job_id)
            else:
                ending.fail_bulk(job_id, error)
