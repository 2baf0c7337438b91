"""/v1/jobs: submit, status, result, cancel, webhook deliveries."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from service.api import error_docs, services
from service.api import schemas as S
from service.api.auth import current_principal, current_tenant
from service.api.bulk import submit_bulk
from service.api.openapi import documented
from service.api.submission import check_fields, json_body
from service.bulk import download, formats, intake
from service.core.errors import InvalidInput, JobNotFound, NotAcceptable
from service.core.messaging import DELIVER_TASK, WEBHOOK_QUEUE, publish_or_defer
from service.jobs import idempotency, lifecycle, retries, view
from service.jobs.inputs import InputBounds, parse_inputs
from service.jobs.requests import JSON_OPTIONS, Options
from service.jobs.submit import Accepted
from service.ops import logs
from service.webhooks import events as webhook_events

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
FIELDS = {*JSON_OPTIONS, "inputs", "input", "output", "overwrite"}
#: The bulk bodies POST /v1/jobs takes besides JSON, by their first media type.
BULK_TYPES = tuple(f.media_types[0] for f in formats.READABLE if f is not formats.JSON)


@bp.url_value_preprocessor
def _refuse_nul(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """No job id holds a NUL, and PostgreSQL cannot even compare text that does: answer as for
    any other missing job (after the key, as for any other id) before SQL sees it."""
    job_id = (values or {}).get("job_id", "")
    if "\x00" in job_id:
        current_tenant()
        raise JobNotFound(job_id)


@bp.post("")
@documented({202: (S.JobAccepted, "Accepted: the job is stored and queued; poll `links.self`"),
             200: (S.JobAccepted, "A retry with the same `Idempotency-Key`: the job the first "
                                  "request created, as it is now")},
            (400, (404, error_docs.MODEL_NOT_FOUND), 408, 413, (415, error_docs.JOBS_MEDIA),
             (422, error_docs.KEY_REUSED)),
            submits=True, json=S.JobSubmit, headers=S.IdempotencyHeaders, tags=["jobs"])
def submit() -> tuple[Response, int, dict[str, str]]:
    """Submit a prediction job

    Checks the rows against the model's signature, stores the job and queues it, and answers
    202 at once with the job's id and links; the worker runs it within milliseconds (a bulk
    job: chunk by chunk). Poll `GET /v1/jobs/{job_id}` until it is `succeeded`, then fetch
    `GET /v1/jobs/{job_id}/result`, or give a `webhook_url` to be told when it ends. For an
    answer in the same request, use `POST /v1/models/{name}/predict` instead.

    The body is JSON (rows in `inputs`, options beside them), or for large jobs a bulk body
    (NDJSON, CSV, .npy or Parquet) with the options in the query string. With an
    `Idempotency-Key` header, a retry of the same request answers 200 with the job the first
    one created; the same key with another request answers 422."""
    tenant = current_tenant()
    fmt = formats.by_media_type(request.mimetype)
    if fmt is not None and fmt.read is not None:  # a bulk body: options in the query
        return answer(tenant, submit_bulk(tenant, fmt))
    body = json_body(BULK_TYPES)
    if request.query_string and request.args:  # not ignored: a JSON job's options are in its body
        raise InvalidInput(sorted(request.args)[0], "a query parameter of bulk bodies only")
    check_fields(body, FIELDS)
    given = Options.from_json(body, request.headers.get(idempotency.HEADER))
    by_reference = "input" in body
    if by_reference == ("inputs" in body):
        raise InvalidInput("inputs", "either a list of rows in `inputs` or a file of yours "
                                     "under the data root in `input`, not both"
                           if by_reference else "required: a list of rows (or `input`, a file "
                                                "of yours under the data root)")
    if "output" in body and not by_reference:
        raise InvalidInput("output", "only a job by reference (`input`) writes a result file")
    if "overwrite" in body and "output" not in body:
        raise InvalidInput("overwrite", "only with `output`, the file it may replace")
    svc = services()
    req = svc.submitter.requests.build(tenant, given, request_id=logs.request_id.get())
    if by_reference:
        fingerprint = idempotency.fingerprint("POST /v1/jobs", body)
        return answer(tenant, intake.submit_reference(
            svc.submitter, svc.settings, req, body["input"], body.get("output"), fingerprint,
            body.get("overwrite", False)))
    rows = parse_inputs(body["inputs"], req.model, InputBounds.of(svc.settings))
    fingerprint = idempotency.fingerprint("POST /v1/jobs", body) if req.key is not None else ""
    return answer(tenant, svc.submitter.rows(req, rows, fingerprint))


def answer(tenant: str, accepted: Accepted) -> tuple[Response, int, dict[str, str]]:
    """202 with the new job's id and where to find it; 200 with the job as it is now for a
    replayed Idempotency-Key."""
    if accepted.replayed:
        job = _job(tenant, accepted.id)
        payload = {k: job[k] for k in ("id", "status", "model", "version", "links")}
        return jsonify(payload), 200, {"Location": job["links"]["self"],
                                       "Idempotent-Replayed": "true"}
    links = view.links(accepted.id)
    payload = {"id": accepted.id, "status": accepted.status.value, "model": accepted.model,
               "version": accepted.version, "links": links}
    return jsonify(payload), 202, {"Location": links["self"]}


def _job(tenant: str, job_id: str) -> dict[str, Any]:
    with services().reads.connect() as conn:
        return view.get(conn, tenant, job_id)


@bp.get("/<job_id>")
@documented({200: (S.Job, "The job: status, progress, times")}, ((404, error_docs.JOB_NOT_FOUND),),
            tags=["jobs"])
def get_job(job_id: str) -> Response:
    """Get a job's status and progress

    Poll this after a submit: `status` goes `queued`, `running`, then `succeeded` or `failed`
    (or `cancelled`, `expired`); `rows_done` and `percent` count a bulk job's progress. Once it
    has succeeded its result is at `links.result`; a failed job says why in `error`."""
    return jsonify(_job(current_tenant(), job_id))


@bp.delete("/<job_id>")
@bp.post("/<job_id>/cancel")
@documented({200: (S.Job, "The job, now `cancelled`")},
            ((404, error_docs.JOB_NOT_FOUND), (409, "`conflict`: the job has already ended")),
            tags=["jobs"])
def cancel(job_id: str) -> Response:
    """Cancel a job

    Stops a queued or running job: no result is written afterwards, its webhooks are told
    `job.cancelled`, and a synchronous predict waiting on it returns. The job stays readable
    as `cancelled`, its `error` naming the key that cancelled it. A job that has already
    ended answers 409. `DELETE /v1/jobs/{job_id}` and
    `POST /v1/jobs/{job_id}/cancel` do the same."""
    principal = current_principal()
    principal.require("submit")
    with services().ends.begin() as ending:
        ending.cancel(principal.tenant, job_id, by=principal.who)
    return jsonify(_job(principal.tenant, job_id))


@bp.post("/<job_id>/retry")
@documented({202: (S.JobAccepted, "Accepted: the retry is stored and queued; its view names "
                                  "the original in `retry_of`"),
             200: (S.JobAccepted, "A retry with the same `Idempotency-Key`: the job the first "
                                  "request created, as it is now")},
            (400, (404, error_docs.JOB_NOT_FOUND), (409, error_docs.NOT_RETRYABLE),
             (422, error_docs.KEY_REUSED)),
            submits=True, json=S.JobRetry, headers=S.IdempotencyHeaders, tags=["jobs"])
def retry(job_id: str) -> tuple[Response, int, dict[str, str]]:
    """Retry a job that has ended

    Submits a new job with the original's inputs (as they were stored: never parsed again),
    its options (priority, webhook URL, retention, keep_inputs) and its model version, unless
    the body names another `version` (one that takes as many features). A `deadline` is not
    copied (the original's has passed): give one in the body. The original may have failed,
    been cancelled or expired, or succeeded. A bulk upload can be retried only if it kept its
    inputs (`keep_inputs=true`); a job by reference reads the same file again. Answers 202
    like a submit; the new job's view has `retry_of`."""
    tenant = current_tenant()
    body = json_body() if request.content_length else {}
    check_fields(body, {"version", "deadline"})
    svc = services()
    with svc.reads.connect() as conn:
        source = retries.original(conn, tenant, job_id)
    given = source.options(body.get("version"), body.get("deadline"),
                           request.headers.get(idempotency.HEADER))
    req = svc.submitter.requests.build(tenant, given, request_id=logs.request_id.get())
    return answer(tenant, svc.submitter.retry(req, source, retries.fingerprint_of(job_id,
                                                                                   body)))


@bp.get("/<job_id>/deliveries")
@documented({200: (S.Deliveries, "The job's events, each with its attempts")},
            ((404, error_docs.JOB_NOT_FOUND),), tags=["webhooks"])
def deliveries(job_id: str) -> Response:
    """List a job's webhook deliveries

    Every webhook event of the job (to the tenant's endpoints and to its own `webhook_url`)
    and every attempt to deliver it: when, the status code answered, how long it took, the
    error. Use it to find out why a receiver did not hear of a job."""
    tenant = current_tenant()
    with services().reads.connect() as conn:
        return jsonify({"events": webhook_events.deliveries(conn, tenant, job_id)})


@bp.post("/<job_id>/deliveries/redeliver")
@documented({202: (S.Redelivered, "The ids of the events queued for delivery again")},
            ((404, error_docs.JOB_NOT_FOUND),), tags=["webhooks"])
def redeliver(job_id: str) -> tuple[Response, int]:
    """Deliver a job's webhook events again

    Queues every event of the job for delivery again, with its original id (a receiver that
    already has it can tell it is the same event), for instance once a receiver that was
    down is back."""
    tenant = current_tenant()
    svc = services()
    with svc.engine.begin() as conn:
        events = webhook_events.redeliver(conn, tenant, job_id)
    publish_or_defer(svc.publish, DELIVER_TASK, WEBHOOK_QUEUE, events)
    return jsonify({"events": events}), 202


@bp.get("/<job_id>/result")
@documented({200: (S.Result, "The predictions, in input order")},
            ((404, error_docs.JOB_NOT_FOUND),
             (406, "`not_acceptable`: none of the formats the Accept header names can be "
                   "written"),
             (409, "`job_not_finished`: the job has no result (yet): it is queued, running, "
                   "failed, cancelled or expired, as `status` says")),
            tags=["jobs"])
def get_result(job_id: str) -> Response:
    """Get a job's result

    The predictions of a succeeded job, one per input row in input order (and a classifier's
    probabilities), with the model version and artifact hash that made them. The Accept
    header picks the format: JSON (the default), NDJSON, CSV, .npy or Parquet; large results
    are streamed chunk by chunk. A job without a result answers 409 with its `status`."""
    tenant = current_tenant()
    fmt = formats.choose(request.accept_mimetypes)
    if fmt is None:
        offered = [f.media_type for f in formats.WRITABLE if f.available]
        raise NotAcceptable("send Accept: " + ", ".join(offered))
    svc = services()
    if fmt is formats.JSON:  # the common case: a small job's stored JSON passed through
        with svc.reads.connect() as conn:
            stored = lifecycle.get_result(conn, tenant, job_id)
        if stored is not None:  # None: a bulk job, its result is in chunks
            return Response(stored, mimetype=fmt.media_type)
    body = download.render(svc.reads, tenant, job_id, fmt)
    return Response(body, mimetype=fmt.media_type, headers={
        "Content-Disposition": f"inline; filename={job_id}{fmt.suffix}"})
