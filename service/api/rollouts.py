"""/v1/models/{name}/rollout and /compare, /v1/jobs/{id}/shadow: the operator rolls a model's
new version out (weights, a shadow), compares two versions on live traffic, and reads a job's
shadow answer. Models are shared by every tenant: each call needs the `operator` scope, which
only the command line grants."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import Connection

from service.api import error_docs, services
from service.api import rollout_schemas as R
from service.api.auth import current_principal
from service.api.openapi import documented
from service.api.submission import json_body
from service.core.errors import InvalidInput, JobNotFound
from service.jobs import compare as comparing
from service.jobs import shadows
from service.models import registry, rollouts

bp = Blueprint("rollouts", __name__, url_prefix="/v1")
OPERATOR_ONLY = (403, "`forbidden`: the key lacks the `operator` scope (granted only by "
                      "`predq keys create --scopes operator`)")


def _operator() -> str:
    """Who is asking, as a rollout change records it; 403 without the operator scope."""
    principal = current_principal()
    principal.require("operator")
    return f"{principal.tenant}: {principal.who}"


@bp.get("/models/<name>/rollout")
@documented({200: (R.Rollout, "The rollout (weights null: latest registered)")},
            ((404, error_docs.MODEL_NOT_FOUND), OPERATOR_ONLY), tags=["rollouts"])
def get_rollout(name: str) -> Response:
    """Get a model's rollout

    How the jobs that name no version share the model's versions, and the shadow a share of
    them also runs on. Weights null: they get the latest registered version."""
    _operator()
    with services().reads.connect() as conn:
        return jsonify(rollouts.describe(conn, name))


@bp.put("/models/<name>/rollout")
@documented({200: (R.Rollout, "The rollout now in force")},
            (400, (404, error_docs.MODEL_NOT_FOUND), OPERATOR_ONLY, 408, 413, 415),
            json=R.RolloutSet, tags=["rollouts"])
def put_rollout(name: str) -> Response:
    """Set a model's rollout

    Jobs that name no version are split by `weights` (a job's version is chosen once, at
    submit, by a hash of its tenant and Idempotency-Key, else of its id); a `shadow` version
    also runs `percent` of them at the lowest priority, its answers kept for
    `GET /v1/models/{name}/compare`, never delivered. Every version must be registered and
    take the same inputs. Promote or roll back: set the weights again. API processes read a
    change within 2 seconds; every change is recorded (`/rollout/history`)."""
    by = _operator()
    body = json_body()
    svc = services()
    with svc.engine.begin() as conn:
        registry.resolve(conn, name)  # 404 before any version is checked
        rollouts.put(conn, rollouts.parse(conn, name, body), by)
        answer = rollouts.describe(conn, name)
    svc.models.forget_rollout(name)
    return jsonify(answer)


@bp.delete("/models/<name>/rollout")
@documented({200: (R.Rollout, "No rollout: jobs get the latest registered version")},
            ((404, error_docs.MODEL_NOT_FOUND), OPERATOR_ONLY), tags=["rollouts"])
def delete_rollout(name: str) -> Response:
    """Clear a model's rollout

    Back to "latest registered": jobs that name no version get the newest version, and no
    shadow runs. Recorded like any change."""
    by = _operator()
    svc = services()
    with svc.engine.begin() as conn:
        registry.resolve(conn, name)
        rollouts.clear(conn, name, by)
        answer = rollouts.describe(conn, name)
    svc.models.forget_rollout(name)
    return jsonify(answer)


@bp.get("/models/<name>/rollout/history")
@documented({200: (R.RolloutHistory, "The changes, newest first")},
            ((404, error_docs.MODEL_NOT_FOUND), OPERATOR_ONLY), tags=["rollouts"])
def rollout_history(name: str) -> Response:
    """List a model's rollout changes

    Who changed the rollout, when, from what to what (null: latest registered), newest
    first; the last 100."""
    _operator()
    with services().reads.connect() as conn:
        registry.resolve(conn, name)
        return jsonify({"model": name, "changes": rollouts.history(conn, name)})


@bp.get("/models/<name>/compare")
@documented({200: (R.Comparison, "How the candidate differs from the baseline")},
            (400, (404, error_docs.MODEL_NOT_FOUND), OPERATOR_ONLY), query=R.CompareQuery,
            tags=["rollouts"])
def compare(name: str) -> Response:
    """Compare two versions on live traffic

    Over the newest shadowed jobs that one version answered as their own and the other as
    their shadow (either way round): for classifiers the share of rows with equal
    predictions and the per-label confusion, for regressors the mean and largest absolute
    difference; for each version the jobs answered, failures and latency (p50, p99: a job's
    claim to its result; a shadow's batch predict)."""
    _operator()
    args = request.args
    unknown = sorted(set(args) - {"baseline", "candidate", "limit"})
    if unknown:
        raise InvalidInput(unknown[0][:100], "unknown query parameter")
    for needed in ("baseline", "candidate"):
        if not args.get(needed):
            raise InvalidInput(needed, "required: a version of the model")
    limit = _limit(args.get("limit"))
    with services().engine.connect() as conn:  # a transaction: PostgreSQL streams the rows
        registry.resolve(conn, name)
        baseline = _version(conn, name, args["baseline"], "baseline")
        candidate = _version(conn, name, args["candidate"], "candidate")
        return jsonify(comparing.compare(conn, baseline, candidate, limit))


@bp.get("/jobs/<job_id>/shadow")
@documented({200: (R.JobShadow, "The job's version and its shadow's answer")},
            ((404, "`job_not_found`: no job has this id"), OPERATOR_ONLY), tags=["rollouts"])
def job_shadow(job_id: str) -> Response:
    """Get a job's shadow answer

    What the rollout's shadow version answered for this job (any tenant's), beside the job's
    own version and status, which the shadow never changes."""
    _operator()
    if "\x00" in job_id:  # no job id holds one, and PostgreSQL cannot compare text that does
        raise JobNotFound(job_id)
    with services().reads.connect() as conn:
        return jsonify(shadows.of_job(conn, job_id))


def _version(conn: Connection, name: str, version: str, field: str) -> registry.ModelInfo:
    try:
        return registry.resolve(conn, name, version)
    except registry.ModelNotFound:
        raise InvalidInput(field, f"model {name!r} has no version {version[:50]!r}") from None


def _limit(raw: str | None) -> int:
    if raw is None:
        return comparing.DEFAULT_PAIRS
    if not raw.isdigit() or not 1 <= int(raw) <= comparing.MAX_PAIRS:
        raise InvalidInput("limit", f"a whole number from 1 to {comparing.MAX_PAIRS}")
    return int(raw)
