"""/v1/jobs: submit, status, result."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service import bulk, chunks, idempotency, jobs, metrics, priorities, realtime, results
from service.api import Services, services
from service.api import schemas as S
from service.api.auth import current_tenant
from service.api.bulk import submit_bulk
from service.api.openapi import documented
from service.api.submission import (
    check_fields,
    check_webhook_url,
    json_body,
    log_accepted,
    parse_deadline,
    parse_retention,
    prepare,
    version_of,
)
from service.errors import InvalidInput, JobNotFound, PredqError
from service.inputs import parse_rows
from service.webhooks import events as webhook_events

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
log = logging.getLogger(__name__)


@bp.url_value_preprocessor
def _refuse_nul(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """No job id holds a NUL, and PostgreSQL cannot even compare text that does: answer as for
    any other missing job (after the key, as for any other id) before SQL sees it."""
    job_id = (values or {}).get("job_id", "")
    if "\x00" in job_id:
        current_tenant()
        raise JobNotFound(job_id)


def _links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}


@bp.post("")
@documented({202: S.JobAccepted, 200: S.JobAccepted}, (400, 404, 413, 415, 422, 429),
            json=S.JobSubmit, tags=["jobs"])
def submit() -> tuple[Response, int, dict[str, str]] | tuple[dict[str, Any], int, dict[str, str]]:
    """Validate against the model signature, commit the job row, publish, answer 202. With an
    `Idempotency-Key` header, a retry of the same request answers 200 with the job the first
    one created; the same key with another request answers 422."""
    tenant = current_tenant()
    fmt = bulk.format_of(request.mimetype)
    if fmt is not None:  # a CSV, NDJSON or .npy body: a bulk job, options in the query
        outcome = submit_bulk(tenant, fmt)
        return _replayed(tenant, outcome) if isinstance(outcome, str) else outcome
    body = json_body()
    if request.query_string and request.args:  # not ignored: a JSON job's options are in its body
        raise InvalidInput(sorted(request.args)[0], "a query parameter of bulk bodies only")
    check_fields(body, {"model", "version", "inputs", "priority", "deadline", "webhook_url",
                        "retention"})
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidInput("model", "required: the name of a registered model")
    if "inputs" not in body:
        raise InvalidInput("inputs", "required: a list of rows")
    key, wanted = _idempotency(tenant, body)
    if key is not None:  # a retry of a request that went through: the same job again
        with services().reads.connect() as conn:
            if idempotency.find(conn, tenant, key) is not None:
                return _replay(tenant, key, wanted)
    priority = body.get("priority")
    queue = priorities.queue_for("normal" if priority is None else priority)  # null: the default
    deadline = parse_deadline(body.get("deadline"))
    svc = services()
    webhook_url = check_webhook_url(svc, tenant, body.get("webhook_url"))
    model = svc.models.resolve(name, version_of(body))
    rows = parse_rows(body["inputs"], model, svc.settings.max_rows_per_job,
                      svc.settings.max_string_length)
    job = prepare(svc, tenant, model, rows, queue, deadline, webhook_url,
                  parse_retention(body.get("retention")))
    if key is not None:
        job = replace(job, idempotency=idempotency.Claim(key, wanted))
    try:
        job = svc.committer.submit(job)
    except jobs.KeyTaken:  # a concurrent attempt with the same key committed first
        return _replay(tenant, key or "", wanted)
    log_accepted(job, model)
    return accepted(job, model.name, model.version)


def _idempotency(tenant: str, body: dict[str, Any]) -> tuple[str | None, str]:
    """The request's Idempotency-Key (checked) and the fingerprint of what it asks."""
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        return None, ""
    return idempotency.check_key(key), idempotency.fingerprint("POST /v1/jobs", body)


def _replay(tenant: str, key: str, wanted: str) -> tuple[Response, int, dict[str, str]]:
    """200 with the job the key's first request created (the same body), or 422."""
    with services().reads.connect() as conn:
        job_id = idempotency.after_race(conn, tenant, key, wanted)
    return _replayed(tenant, job_id)


def _replayed(tenant: str, job_id: str) -> tuple[Response, int, dict[str, str]]:
    job = _job(tenant, job_id)
    payload = {k: job[k] for k in ("id", "status", "model", "version", "links")}
    return jsonify(payload), 200, {"Location": job["links"]["self"],
                                   "Idempotent-Replayed": "true"}


def accepted(job: jobs.NewJob, model: str, version: str) -> tuple[Response, int, dict[str, str]]:
    """202 with the job's id and where to find it."""
    links = _links(job.id)
    status = jobs.JobStatus.QUEUED if job.needs_worker else jobs.JobStatus.SUCCEEDED
    payload = {"id": job.id, "status": status.value, "model": model, "version": version,
               "links": links}
    return jsonify(payload), 202, {"Location": links["self"]}


def _job(tenant: str, job_id: str) -> dict[str, Any]:
    with services().reads.connect() as conn:
        job = jobs.get_job(conn, tenant, job_id)
    status = job["status"]
    done = job["n_rows"] if status == jobs.JobStatus.SUCCEEDED else job["rows_done"]
    out: dict[str, Any] = {
        "id": job["id"],
        "status": status,
        "model": job["model"],
        "version": job["version"],
        "rows": job["n_rows"],
        "rows_total": job["n_rows"],
        "rows_done": done,
        "percent": round(100.0 * done / job["n_rows"], 2) if job["n_rows"] else 100.0,
        "attempts": job["attempts"],
        "priority": priorities.name_of(job["queue"]),
        "from_cache": bool(job["from_cache"]),
        "created_at": jobs.iso(job["created_at"]),
        "started_at": jobs.iso(job["started_at"]),
        "finished_at": jobs.iso(job["finished_at"]),
        "deadline": jobs.iso(job["deadline"]),
        "links": _links(job["id"]),
    }
    if job["error"] is not None:
        out["error"] = job["error"]
    return out


@bp.get("/<job_id>")
@documented({200: S.Job}, (404,), tags=["jobs"])
def get_job(job_id: str) -> Response:
    return jsonify(_job(current_tenant(), job_id))


@bp.delete("/<job_id>")
@bp.post("/<job_id>/cancel")
@documented({200: S.Job}, (404, 409), tags=["jobs"])
def cancel(job_id: str) -> Response:
    """Cancel a queued or running job: no result is written afterwards. 409 once finished."""
    tenant = current_tenant()
    svc = services()
    with svc.engine.begin() as conn:
        jobs.cancel(conn, tenant, job_id)
        events = webhook_events.record(conn, [job_id], svc.settings.webhook_max_inline_bytes)
    realtime.announce_done(svc.redis, [job_id])  # a synchronous caller waiting on it returns
    send_events(svc, events)
    job = _job(tenant, job_id)
    metrics.jobs_ended([(str(job["model"]), "cancelled", tenant)])
    return jsonify(job)


def send_events(svc: Services, events: list[str]) -> None:
    """Publish committed webhook events; if Redis is down the reconciler's sweep sends them."""
    if not events:
        return
    from workers.app import WEBHOOK_QUEUE

    try:
        svc.publish(WEBHOOK_QUEUE, events)
    except Exception:  # noqa: BLE001 - the outbox holds them
        log.warning("could not publish %d webhook events; the reconciler will", len(events))


@bp.get("/<job_id>/deliveries")
@documented({200: S.Deliveries}, (404,), tags=["webhooks"])
def deliveries(job_id: str) -> Response:
    """Every webhook event of the job and every attempt to deliver it."""
    tenant = current_tenant()
    with services().reads.connect() as conn:
        return jsonify({"events": webhook_events.deliveries(conn, tenant, job_id)})


@bp.post("/<job_id>/deliveries/redeliver")
@documented({202: S.Redelivered}, (404,), tags=["webhooks"])
def redeliver(job_id: str) -> tuple[Response, int]:
    """Send the job's events again, with their original ids."""
    tenant = current_tenant()
    svc = services()
    with svc.engine.begin() as conn:
        events = webhook_events.redeliver(conn, tenant, job_id)
    send_events(svc, events)
    return jsonify({"events": events}), 202


@bp.get("/<job_id>/result")
@documented({200: S.Result}, (404, 406, 409), tags=["jobs"])
def get_result(job_id: str) -> Response:
    """The result in the format the Accept header asks for: JSON (default), NDJSON, CSV or
    .npy (the predictions), streamed chunk by chunk in input order."""
    tenant = current_tenant()
    media = results.choose(request.accept_mimetypes)
    if media is None:
        raise NotAcceptable("send Accept: " + ", ".join(results.MEDIA_TYPES))
    svc = services()
    with svc.reads.connect() as conn:
        if media == "application/json":  # the common case: stored JSON passed through
            stored = jobs.get_result(conn, tenant, job_id)
            if stored is not None:  # None: a bulk job, its result is in chunks
                return Response(stored, mimetype=media)
        meta = jobs.result_source(conn, tenant, job_id)
    source = chunks.result_chunks(svc.reads, job_id, meta["result"])
    labels = meta["labels"]
    if media == "application/json":
        body = results.json_body(source, {"model": meta["name"], "version": meta["version"],
                                          "sha256": meta["sha256"]}, labels is not None)
    elif media == "application/x-ndjson":
        body = results.ndjson_body(source)
    elif media == "text/csv":
        body = results.csv_body(source, labels)
    else:
        body = results.npy_body(source, meta["n_rows"], labels)
    return Response(body, mimetype=media,
                    headers={"Content-Disposition": f"inline; filename={job_id}"
                                                    f"{results.SUFFIX[media]}"})


class NotAcceptable(PredqError):
    status = 406
    code = "not_acceptable"

