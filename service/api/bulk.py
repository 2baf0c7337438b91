"""POST /v1/jobs with a CSV, NDJSON or .npy body: a bulk job, streamed into chunks."""

from __future__ import annotations

import contextlib
import hashlib
import io
from typing import IO, Any

from flask import request

from service import bulkjobs, chunks, idempotency, logs, priorities
from service.api import services
from service.api.submission import check_webhook_url, parse_deadline, parse_retention
from service.errors import InvalidInput
from workers.app import CHUNK_TASK

QUERY = {"model", "version", "priority", "deadline", "webhook_url", "keep_inputs", "retention"}


class HashingReader(io.RawIOBase):
    """The request stream, hashed as it is read (the Idempotency-Key fingerprint); wrap it in
    io.BufferedReader for the parsers."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self._stream = stream
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        self.digest.update(data)
        buffer[:len(data)] = data
        return len(data)


def _drain(stream: IO[bytes], raw: HashingReader) -> str:
    while stream.read(1 << 16):
        pass
    return raw.digest.hexdigest()


def submit_bulk(tenant: str, fmt: str) -> tuple[dict[str, Any], int, dict[str, str]] | str:
    """Validate the query, stream the body into chunks, then commit the job and send its
    first chunks. Returns (payload, status, headers), or the id of the job an earlier
    request with the same Idempotency-Key created."""
    svc = services()
    args = request.args
    unknown = sorted(set(args) - QUERY)
    if unknown:
        raise InvalidInput(unknown[0][:100], "unknown query parameter")
    name = args.get("model")
    if not name:
        raise InvalidInput("model", "required: ?model=NAME (the body holds only the rows)")
    model = svc.models.resolve(name, args.get("version"))
    queue = priorities.queue_for(_priority(args.get("priority", "bulk")))
    deadline = parse_deadline(_deadline(args.get("deadline")))
    webhook_url = check_webhook_url(svc, tenant, args.get("webhook_url"))
    keep = _flag(args.get("keep_inputs"), "keep_inputs")
    request.max_content_length = svc.settings.max_upload_bytes
    raw = HashingReader(request.stream)
    stream = io.BufferedReader(raw, 1 << 16)
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        key = idempotency.check_key(key)
        with svc.reads.connect() as conn:
            found = idempotency.find(conn, tenant, key)
        if found is not None:  # a retry: compare what it asks, store nothing
            return idempotency.replay(found, key, _fingerprint(args, _drain(stream, raw)))
    svc.gauge.admit(queue, tenant)
    wanted = lambda: _fingerprint(args, raw.digest.hexdigest())  # noqa: E731 - once read
    created = bulkjobs.create(
        svc.engine, svc.settings,
        bulkjobs.BulkJob(tenant, model, fmt, queue, deadline, webhook_url,
                         logs.request_id.get(), keep, parse_retention(args.get("retention"))),
        stream, claim=lambda: None if key is None else idempotency.Claim(key, wanted()),
        before_commit=lambda rows: svc.quotas.take_rows(tenant, rows))
    if created is None:  # a concurrent request with the same key committed first
        with svc.reads.connect() as conn:
            return idempotency.after_race(conn, tenant, key or "", wanted())
    job_id, first = created
    with contextlib.suppress(Exception):  # committed: else the reconciler sends the chunks
        svc.publish(queue, [chunks.chunk_id(job_id, s) for s in first], task=CHUNK_TASK)
    links = {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}
    payload = {"id": job_id, "status": "queued", "model": model.name, "version": model.version,
               "links": links}
    return payload, 202, {"Location": links["self"]}


def _fingerprint(args: Any, body_sha256: str) -> str:
    return idempotency.fingerprint("POST /v1/jobs bulk", sorted(args.items(multi=True)),
                                   body_sha256)


def _priority(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def _deadline(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _flag(value: str | None, field: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidInput(field, "true or false")
