"""/v1/jobs: submit, status, result."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from service import jobs
from service.api import services
from service.api.auth import current_tenant
from service.errors import InvalidInput, MalformedJSON, PredqError
from service.inputs import parse_rows

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


class UnsupportedMediaType(PredqError):
    status = 415
    code = "unsupported_media_type"


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or an error that says what is wrong with it."""
    mimetype = request.mimetype
    # curl -d sends application/x-www-form-urlencoded unless told otherwise; read it as JSON.
    if mimetype not in ("", "application/json", "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType(f"send Content-Type: application/json, not {mimetype}")
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw.decode("utf-8"))  # RFC 8259: JSON between systems is UTF-8
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"the body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise MalformedJSON(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise MalformedJSON("the JSON is nested too deeply") from exc
    if not isinstance(body, dict):
        raise MalformedJSON("the body must be a JSON object")
    return body


def _links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}


@bp.post("")
def submit() -> tuple[Response, int, dict[str, str]]:
    """Validate against the model signature, commit the job row, publish, answer 202."""
    tenant = current_tenant()
    body = json_body()
    unknown = sorted(set(body) - {"model", "version", "inputs"})
    if unknown:
        raise InvalidInput(unknown[0], "unknown field")
    name, version = body.get("model"), body.get("version")
    if not isinstance(name, str) or not name:
        raise InvalidInput("model", "required: the name of a registered model")
    if version is not None and not isinstance(version, str | int):
        raise InvalidInput("version", "must be a string")
    if "inputs" not in body:
        raise InvalidInput("inputs", "required: a list of rows")
    svc = services()
    model = svc.models.resolve(name, None if version is None else str(version))
    rows = parse_rows(body["inputs"], model, svc.settings.max_rows_per_job)
    job = svc.committer.submit(jobs.NewJob(tenant=tenant, model_id=model.id, inputs=rows))
    links = _links(job.id)
    payload = {"id": job.id, "status": jobs.JobStatus.QUEUED.value, "model": model.name,
               "version": model.version, "links": links}
    return jsonify(payload), 202, {"Location": links["self"]}


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    tenant = current_tenant()
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
        "created_at": _iso(job["created_at"]),
        "started_at": _iso(job["started_at"]),
        "finished_at": _iso(job["finished_at"]),
        "links": _links(job["id"]),
    }
    if job["error"] is not None:
        out["error"] = job["error"]
    return jsonify(out)


@bp.get("/<job_id>/result")
def get_result(job_id: str) -> Response:
    tenant = current_tenant()
    with services().reads.connect() as conn:
        body = jobs.get_result(conn, tenant, job_id)
    return Response(body, mimetype="application/json")


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; predq writes UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")
