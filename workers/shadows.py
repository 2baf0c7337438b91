"""The shadow task's work: run ended jobs' rows on their shadow version, one predict() per
version, and store the answers beside the jobs (`service/jobs/shadows.py`); a bulk job's
chunks one by one, as each is done. Nothing here touches a job's row or result: its result,
status and webhooks are its own."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from service.bulk import refread
from service.core.messaging import parse_chunk_id
from service.jobs import payloads, shadows
from service.jobs.shadows import Answer, ChunkAnswer, Pending, PendingChunk
from service.jobs.typedstore import decode_batch
from service.models.modelinput import concat_batches
from service.ops import metrics
from workers.batching import Runner
from workers.modelcore import predict

log = logging.getLogger(__name__)


class ShadowRunner:
    """Runs shadows with a worker's runner: its engine, model cache and metadata."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def run(self, ids: Sequence[str]) -> int:
        """Answer the shadows of single jobs (their ids) and bulk chunks (`job-id/seq`) still
        unanswered; return how many answers were stored."""
        chunks = [c for c in map(parse_chunk_id, ids) if c is not None]
        job_ids = [i for i in ids if parse_chunk_id(i) is None]
        stored = self._chunks(chunks) if chunks else 0
        return stored + (self._jobs(job_ids) if job_ids else 0)

    def _jobs(self, job_ids: Sequence[str]) -> int:
        with self.runner.engine.connect() as conn:
            found = shadows.pending(conn, job_ids)
        by_model: dict[int, list[Pending]] = defaultdict(list)
        for job in found:
            by_model[job.shadow_model_id].append(job)
        answers = [a for model_id, group in by_model.items()
                   for a in self._answer(model_id, group)]
        with self.runner.engine.begin() as conn:
            stored = shadows.record(conn, answers)
        for answer in answers:
            info = self.runner.info(answer.model_id)
            metrics.shadow_ran(info.name, info.version, answer.error is None)
        return stored

    def _answer(self, model_id: int, group: list[Pending]) -> list[Answer]:
        start = time.perf_counter()
        try:
            info = self.runner.info(model_id)
            model = self.runner.models.get(info)
            out = predict(model, info, concat_batches([job.rows(info.schema) for job in group]))
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is recorded, never raised
            seconds = time.perf_counter() - start
            if len(group) > 1:  # one bad job fails alone, as its primary would
                return [a for job in group for a in self._answer(model_id, [job])]
            log.info("shadow of job %s failed on version %s: %s", group[0].id, model_id, exc)
            return [Answer(group[0].id, model_id, seconds,
                           error=f"{type(exc).__name__}: {exc}"[:2000])]
        seconds = time.perf_counter() - start
        answers, at = [], 0
        for job in group:
            answers.append(Answer(job.id, model_id, seconds, result={
                k: v[at:at + job.n_rows].tolist() for k, v in out.items()}))
            at += job.n_rows
        return answers

    def _chunks(self, chunks: Sequence[tuple[str, int]]) -> int:
        with self.runner.engine.connect() as conn:
            found = shadows.pending_chunks(conn, chunks)
        answers = [self._answer_chunk(chunk) for chunk in found]
        with self.runner.engine.begin() as conn:
            stored = shadows.record_chunks(conn, answers)
        for answer in answers:
            info = self.runner.info(answer.model_id)
            metrics.shadow_ran(info.name, info.version, answer.error is None)
        return stored

    def _answer_chunk(self, chunk: PendingChunk) -> ChunkAnswer:
        """One chunk on the shadow version: its rows as stored, or read from the job's file."""
        start = time.perf_counter()
        model_id = chunk.shadow_model_id
        try:
            info = self.runner.info(model_id)
            model = self.runner.models.get(info)
            if chunk.stored is not None:
                rows = decode_batch(chunk.stored, info.schema, chunk.n_rows)
            else:
                rows = refread.read_chunk(self.runner.data_root, chunk.source or "",
                                          chunk.start, chunk.stop, info)
            out = payloads.encode_result(predict(model, info, rows))
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is recorded, never raised
            log.info("shadow of chunk %d of job %s failed on version %s: %s", chunk.seq,
                     chunk.job_id, model_id, exc)
            return ChunkAnswer(chunk.job_id, chunk.seq, model_id, time.perf_counter() - start,
                               error=f"{type(exc).__name__}: {exc}"[:2000])
        return ChunkAnswer(chunk.job_id, chunk.seq, model_id, time.perf_counter() - start,
                           result=out)
