"""/v1/models: what can be predicted, with its signature; synchronous predict."""

from __future__ import annotations

import math
import time
from dataclasses import replace

from flask import Blueprint, Response, jsonify, request

from service.api import error_docs, services
from service.api import schemas as S
from service.api.auth import current_tenant
from service.api.jobs import answer
from service.api.openapi import documented
from service.api.submission import check_fields, json_body
from service.core import states
from service.core.errors import InvalidInput, JobNotFinished, ModelNotFound, PredqError
from service.jobs import idempotency, lifecycle
from service.jobs.inputs import InputBounds, parse_inputs
from service.jobs.requests import Options
from service.models import registry, rollouts
from service.ops import logs

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.get("")
@documented({200: (S.ModelList, "Every model, as its latest version")}, tags=["models"])
def list_models() -> Response:
    """List the models

    Every registered model by name, described by its latest version: classifier or
    regressor, its features in order (what each input row holds), its labels, and the
    versions it has, and the shares of its versions when the operator set a rollout. Read
    it to learn what `inputs` a submit takes."""
    current_tenant()
    with services().reads.connect() as conn:
        infos = registry.list_models(conn)
        shown = {name: {"shares": r.public()["shares"], "shadow": r.public()["shadow"]}
                 for name, r in rollouts.every(conn).items()}
    latest: dict[str, registry.ModelInfo] = {}
    for info in infos:  # ordered by id: the last one seen is the latest
        latest[info.name] = info
    return jsonify({
        "models": [
            {**info.public(), "versions": [i.version for i in infos if i.name == info.name],
             "rollout": shown.get(info.name)}
            for info in latest.values()
        ]
    })


@bp.get("/<name>")
@documented({200: (S.ModelDetail, "The latest version, and every version in full")},
            ((404, error_docs.MODEL_NOT_FOUND),), tags=["models"])
def get_model(name: str) -> Response:
    """Get a model

    The model's latest version (what a submit without `version` uses) and every registered
    version in full: features, labels, the artifact's sha256 and the library versions it was
    registered under."""
    current_tenant()
    with services().reads.connect() as conn:
        infos = registry.list_models(conn, name)
    if not infos:
        raise ModelNotFound(name)
    return jsonify({**infos[-1].public(), "versions": [i.public() for i in infos]})


@bp.get("/<name>/versions/<version>")
@documented({200: (S.ModelVersion, "The version")}, ((404, error_docs.MODEL_NOT_FOUND),),
            tags=["models"])
def get_version(name: str, version: str) -> Response:
    """Get one version of a model

    One registered version: its features in order, labels, the artifact's sha256 and the
    scikit-learn and numpy versions it was registered under. Use it to check which version
    made a result (a result names its `version` and `sha256`)."""
    current_tenant()
    with services().reads.connect() as conn:
        return jsonify(registry.resolve(conn, name, version).public())


class PredictionFailed(PredqError):
    status = 422
    code = "prediction_failed"

    def __init__(self, job_id: str, error: str | None) -> None:
        super().__init__(error or "the prediction failed")
        self.job_id = job_id

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "job_id": self.job_id}


@bp.post("/<name>/predict")
@documented({200: (S.Result, "The predictions, as `GET /v1/jobs/{job_id}/result` gives them"),
             202: (S.JobAccepted, "Not done within `timeout`: the job, to poll as any other")},
            (400, (404, error_docs.MODEL_NOT_FOUND), 408,
             (409, "`job_not_finished`: the job was cancelled, or expired before a worker "
                   "started it"),
             413, 415,
             (422, "`prediction_failed`: the model failed on these rows (`job_id` names the "
                   "failed job); `idempotency_key_reused`: the `Idempotency-Key` was used for "
                   "a different request")),
            submits=True, json=S.PredictRequest, query=S.PredictQuery,
            headers=S.IdempotencyHeaders, tags=["predict"])
def predict(name: str) -> Response | tuple[Response, int, dict[str, str]]:
    """Predict and wait for the answer

    For an application that wants its prediction in the same request: submits the rows on
    the interactive queue (never behind bulk work) and waits for the result, answering 200
    with the same body as `GET /v1/jobs/{job_id}/result`, usually within milliseconds. If
    `timeout` passes first, it answers 202 with the job instead; the timeout is also the
    job's deadline: if no worker has started it by then, it never runs.

    With an `Idempotency-Key`, a retry (say, after a broken connection) waits for the job the
    first attempt created instead of making another; the same key with another body answers
    422. For bulk work use `POST /v1/jobs`."""
    tenant = current_tenant()
    body = json_body()
    check_fields(body, {"version", "inputs"})
    if "inputs" not in body:
        raise InvalidInput("inputs", "required: a list of rows")
    svc = services()
    timeout = _timeout(svc.settings.sync_timeout_default, svc.settings.sync_timeout_max)
    key = request.headers.get(idempotency.HEADER)
    # The timeout is also the job's deadline: not started by then, it never runs.
    given = replace(Options.from_json({**body, "model": name}, key), priority="interactive",
                    deadline=timeout)
    req = svc.submitter.requests.build(tenant, given, request_id=logs.request_id.get())
    rows = parse_inputs(body["inputs"], req.model, InputBounds.of(svc.settings))
    until = time.monotonic() + timeout
    fingerprint = "" if key is None else idempotency.fingerprint(
        "POST /v1/models/predict", name, body)
    job_id = ""

    def expect(new_id: str) -> None:  # before the commit: no wake-up can be missed
        nonlocal job_id
        job_id = new_id
        svc.waiter.expect(new_id)

    try:
        accepted = svc.submitter.rows(req, rows, fingerprint, on_id=expect)
        if accepted.replayed:  # the first attempt's job: look at it before waiting on it
            if job_id:
                svc.waiter.forget(job_id)
            expect(accepted.id)
        woken = accepted.status.is_final or accepted.replayed or \
            svc.waiter.wait(job_id, until - time.monotonic())
        while True:
            result = _final_result(tenant, job_id)
            if result is not None:
                if accepted.replayed:
                    result.headers["Idempotent-Replayed"] = "true"
                return result
            if not woken:
                accepted_answer = answer(tenant, accepted)
                if accepted.replayed:  # still running: 202 as for the first attempt
                    payload, _, headers = accepted_answer
                    return payload, 202, headers
                return accepted_answer
            woken = svc.waiter.wait(job_id, until - time.monotonic())
    finally:
        if job_id:
            svc.waiter.forget(job_id)


def _final_result(tenant: str, job_id: str) -> Response | None:
    """The result response once the job is final; None while it is queued or running."""
    try:
        with services().reads.connect() as conn:
            body = lifecycle.get_result(conn, tenant, job_id)
    except JobNotFinished as exc:
        if exc.job_status == states.JobStatus.FAILED:
            raise PredictionFailed(job_id, exc.error) from exc
        if exc.job_status in (states.JobStatus.QUEUED, states.JobStatus.RUNNING):
            return None
        raise
    response = Response(body, mimetype="application/json")
    response.headers["Content-Location"] = f"/v1/jobs/{job_id}/result"
    return response


def _timeout(default: float, maximum: float) -> float:
    raw = request.args.get("timeout")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= maximum:  # also refuses nan and inf
        raise InvalidInput("timeout", f"seconds to wait, more than 0 and at most {maximum:g}")
    return value
