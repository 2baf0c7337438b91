"""A retry of a job that has ended: a new job with the original's stored inputs, options and
model version (unless the retry names another version), whose view names the original
(`retry_of`). The inputs are copied in SQL, as stored, whatever form they are stored in (rows,
chunks, or the chunks' ranges of a file by reference): they are never parsed again, so a
retry runs on exactly what the original was given. The copy goes through the one Submitter
(`Submitter.retry`): admitted, charged and published like any job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, func, insert, literal, select

from service.core.errors import Conflict, InvalidInput, JobNotFound
from service.core.states import JobStatus
from service.jobs import idempotency, priorities
from service.jobs.chunkstore import PENDING, Reference
from service.jobs.requests import JobRequest, Options
from service.models.registry import ModelInfo
from service.models.schema import InputSchema
from service.store.db import job_chunks, jobs, models

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
Kind = Literal["rows", "upload", "file"]


class InputsNotKept(Conflict):
    code = "inputs_not_kept"


@dataclass(frozen=True)
class Original:
    """What a retry copies of a job that has ended."""

    id: str
    kind: Kind  # rows in the job row; an upload's chunks; a file by reference's chunks
    model: str
    version: str
    n_rows: int
    n_chunks: int
    queue: str
    webhook_url: str | None
    retention: int | None
    keep_inputs: bool
    input_ref: str | None
    output_ref: str | None
    input_format: str | None

    def options(self, version: str | None, deadline: Any, key: str | None) -> Options:
        """The original's options, for the one RequestBuilder: its model version unless the
        retry names another; no deadline unless the retry gives one (the original's has
        passed, or soon will)."""
        return Options(self.model, version or self.version, priorities.name_of(self.queue),
                       deadline, self.webhook_url, self.retention, self.keep_inputs, key)

    def reference(self) -> Reference | None:
        """A file by reference's source and output, for the new job's row."""
        if self.kind != "file":
            return None
        assert self.input_ref is not None
        return Reference(self.input_ref, self.output_ref, self.n_rows, [])


def original(conn: Connection, tenant: str, job_id: str) -> Original:
    """The job `job_id` of `tenant` as a retry copies it. JobNotFound as everywhere;
    Conflict while it runs; InputsNotKept when its inputs are gone (an upload that did not
    keep them: they go when it succeeds, or with the retention sweep)."""
    row = conn.execute(
        select(jobs.c.id, jobs.c.status, jobs.c.n_rows, jobs.c.n_chunks, jobs.c.queue,
               jobs.c.webhook_url, jobs.c.retention, jobs.c.keep_inputs, jobs.c.input_ref,
               jobs.c.output_ref, jobs.c.input_format, jobs.c.inputs.is_not(None).label("held"),
               models.c.name, models.c.version)
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.id == job_id, jobs.c.tenant == tenant)).first()
    if row is None:
        raise JobNotFound(job_id)
    if row.status in ACTIVE:
        raise Conflict(f"job {job_id} is still {row.status}: only a job that has ended can be "
                       "retried (cancel it first, or wait)")
    kind: Kind = "rows" if row.n_chunks is None else \
        "file" if row.input_ref is not None else "upload"
    if kind == "rows" and not row.held:
        raise InputsNotKept(f"job {job_id}'s inputs are no longer stored; submit its rows again")
    if kind == "upload" and _chunks_without_inputs(conn, job_id):
        raise InputsNotKept(
            f"job {job_id} did not keep its inputs (an upload keeps them only when submitted "
            "with keep_inputs=true); upload its file again, with ?keep_inputs=true to make it "
            "retryable")
    return Original(row.id, kind, row.name, row.version, row.n_rows,
                    row.n_chunks or 0, row.queue, row.webhook_url, row.retention,
                    bool(row.keep_inputs), row.input_ref, row.output_ref, row.input_format)


def _chunks_without_inputs(conn: Connection, job_id: str) -> int:
    return int(conn.execute(select(func.count()).select_from(job_chunks).where(
        job_chunks.c.job_id == job_id, job_chunks.c.inputs.is_(None))).scalar_one())


def check_version(req: JobRequest, was: ModelInfo) -> None:
    """Another version may run the original's stored inputs only if they are stored the same
    way for it: as many number columns (stored as plain rows), or the same columns by name
    and type (stored as Arrow)."""
    if _stored_form(req.model.schema) != _stored_form(was.schema):
        raise InvalidInput("version", f"{req.model.name} {req.model.version} takes other inputs "
                                      f"({_described(req.model.schema)}) than {was.version} "
                                      f"({_described(was.schema)}), whose rows the job has")


def _stored_form(schema: InputSchema) -> tuple[Any, ...]:
    if schema.numeric_only:
        return ("numbers", len(schema.columns))
    return tuple((c.name, c.type) for c in schema.columns)


def _described(schema: InputSchema) -> str:
    if schema.numeric_only:
        return f"{len(schema.columns)} features"
    return ", ".join(f"{c.name}: {c.type.value}" for c in schema.columns[:6]) + \
        (", ..." if len(schema.columns) > 6 else "")


def copy_job(conn: Connection, source_id: str, job_id: str, req: JobRequest,
             now: datetime) -> None:
    """INSERT the retry's job row of a few rows, its inputs copied from the original's."""
    values: dict[str, ColumnElement[Any]] = {
        "id": literal(job_id), "tenant": literal(req.tenant), "model_id": literal(req.model.id),
        "status": literal(JobStatus.QUEUED.value), "queue": literal(req.queue),
        "n_rows": jobs.c.n_rows, "inputs": jobs.c.inputs, "attempts": literal(0),
        "created_at": literal(now, jobs.c.created_at.type),
        "published_at": literal(now, jobs.c.published_at.type),
        "deadline": literal(req.deadline, jobs.c.deadline.type),
        "webhook_url": literal(req.webhook_url, jobs.c.webhook_url.type),
        "request_id": literal(req.request_id, jobs.c.request_id.type),
        "retention": literal(req.retention, jobs.c.retention.type),
        "from_cache": literal(False), "retry_of": literal(source_id),
    }
    conn.execute(insert(jobs).from_select(
        list(values), select(*values.values()).where(jobs.c.id == source_id)))


def copy_chunks(conn: Connection, source_id: str, job_id: str, now: datetime) -> None:
    """INSERT the retry's chunks: each of the original's, pending, with its stored inputs (an
    upload's) or its range of the file (by reference)."""
    c = job_chunks.c
    values: dict[str, ColumnElement[Any]] = {
        "job_id": literal(job_id), "seq": c.seq, "n_rows": c.n_rows, "inputs": c.inputs,
        "status": literal(PENDING), "attempts": literal(0),
        "created_at": literal(now, c.created_at.type), "start": c.start, "stop": c.stop,
    }
    conn.execute(insert(job_chunks).from_select(
        list(values), select(*values.values()).where(c.job_id == source_id)))


def fingerprint_of(job_id: str, body: dict[str, Any]) -> str:
    """What an Idempotency-Key on a retry stands for: this job and these options."""
    return idempotency.fingerprint(f"POST /v1/jobs/{job_id}/retry", body)
