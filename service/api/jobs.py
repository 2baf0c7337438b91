"""/v1/jobs: submit, status, result."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify

from service import jobs, metrics, priorities, realtime
from service.api import Services, services
from service.api import schemas as S
from service.api.auth import current_tenant
from service.api.openapi import documented
from service.api.submission import (
    check_fields,
    check_webhook_url,
    json_body,
    log_accepted,
    parse_deadline,
    prepare,
    version_of,
)
from service.errors import InvalidInput
from service.inputs import parse_rows
from service.webhooks import events as webhook_events

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
log = logging.getLogger(__name__)


def _links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}


@bp.post("")
@documented({202: S.JobAccepted}, (400, 404, 413, 415, 429), json=S.JobSubmit,
            tags=["jobs"])
def submit() -> tuple[Response, int, dict[str, str]]:
    """Validate against the model signature, commit the job row, publish, answer 202."""
    tenant = current_tenant()
    body = json_body()
    check_fields(body, {"model", "version", "inputs", "priority", "deadline", "webhook_url"})
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidInput("model", "required: the name of a registered model")
    if "inputs" not in body:
        raise InvalidInput("inputs", "required: a list of rows")
    queue = priorities.queue_for(body.get("priority", "normal"))
    deadline = parse_deadline(body.get("deadline"))
    svc = services()
    webhook_url = check_webhook_url(svc, tenant, body.get("webhook_url"))
    model = svc.models.resolve(name, version_of(body))
    rows = parse_rows(body["inputs"], model, svc.settings.max_rows_per_job)
    job = svc.committer.submit(prepare(svc, tenant, model, rows, queue, deadline, webhook_url))
    log_accepted(job, model)
    return accepted(job, model.name, model.version)


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
    out: dict[str, Any] = {
        "id": job["id"],
        "status": status,
        "model": job["model"],
        "version": job["version"],
        "rows": job["n_rows"],
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
@documented({200: S.Result}, (404, 409), tags=["jobs"])
def get_result(job_id: str) -> Response:
    tenant = current_tenant()
    with services().reads.connect() as conn:
        body = jobs.get_result(conn, tenant, job_id)
    return Response(body, mimetype="application/json")

