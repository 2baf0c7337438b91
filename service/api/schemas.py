"""The shapes of request and response bodies, for the OpenAPI description (`/openapi.json`).

The views keep their own validation, whose errors name the exact field (`inputs[3][2]`); these
models describe the same contract, and the test suite checks every response against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
Priority = Literal["interactive", "normal", "bulk"]
EventType = Literal["job.succeeded", "job.failed", "job.cancelled", "job.expired"]
Value = float | int | bool | str | None
Row = list[Value] | dict[str, Value]
Rows = Annotated[list[Row], Field(
    min_length=1, description="rows in the model's column order, or keyed by column name; at "
    "most PREDQ_MAX_ROWS_PER_JOB (10,000) of them. Each value as the model's input schema "
    "says (`GET /v1/models/{name}`: `inputs.columns`): a number, an integer, true/false, a "
    "string, an ISO 8601 date or time, or null where the column may be missing")]
Level = Annotated[int, Field(ge=0, le=9)]
Seconds = Annotated[float, Field(gt=0, le=30 * 86_400)]
Url = Annotated[str, Field(min_length=1, max_length=2000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(Open):
    code: str = Field(description="machine-readable: invalid_input, job_not_found, ...")
    message: str
    field: str | None = Field(None, description="where the problem is, e.g. inputs[3][2]")
    status: JobStatus | None = Field(None, description="the job's status (job_not_finished)")
    retry_after: int | None = Field(None, description="seconds (queue_full)")
    job_id: str | None = Field(None, description="the failed job (prediction_failed)")


class Error(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"error": {"code": "invalid_input", "field": "inputs[0]",
                   "message": "inputs[0]: 3 values; the model takes 4 features"}}]})

    error: ErrorDetail


def _header_schema(schema: dict[str, Any]) -> None:
    """A header is sent or not: no `default: null`. No spaces at the ends: HTTP strips them."""
    schema.pop("default", None)
    schema["pattern"] = "^[!-~]([ -~]*[!-~])?$"


class IdempotencyHeaders(Open):
    idempotency_key: str | SkipJsonSchema[None] = Field(
        None, alias="Idempotency-Key", min_length=1, max_length=255,
        json_schema_extra=_header_schema,
        description="any unique string of printable ASCII (a UUID, say): a retry with the same "
                    "key and the same request gets the job the first attempt created instead "
                    "of a second one; keys are kept 24 hours")


class Links(Strict):
    self: str
    result: str


class JobRetry(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {}, {"version": "1"}, {"deadline": 600}]})

    version: str | int | None = Field(None, description="default: the original's version")
    deadline: Seconds | datetime | None = Field(
        None, description="seconds from now, or an ISO 8601 time with a timezone; default: "
                          "none (the original's is not copied)")


class JobSubmit(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
        {"model": "iris", "inputs": [{"sepal_length": 5.9, "sepal_width": 3.0,
                                      "petal_length": 4.2, "petal_width": 1.5}],
         "priority": "interactive", "deadline": 60},
        {"model": "iris", "input": "nightly/rows.parquet", "output": "nightly/preds.parquet"},
    ]})

    model: str = Field(min_length=1, description="name of a registered model")
    version: str | int | None = Field(None, description="default: the latest version")
    inputs: Rows | None = Field(None, description="the rows; or give `input` instead")
    input: str | None = Field(
        None, min_length=1, description=(
            "instead of `inputs`: a .npy, .parquet or .csv file in the tenant's directory "
            "under the server's data root (PREDQ_DATA_ROOT), relative to that directory, or "
            "`@PREFIX/...` in a prefix the operator shares with the tenant; a bulk job whose "
            "workers read the file. Absolute paths, `..`, symbolic links leading out and files "
            "with more than one hard link are refused (400)"))
    output: str | None = Field(
        None, min_length=1, description=(
            "with `input`: a file in the tenant's directory the result is also written to "
            "once every chunk is done (its suffix names the format: .json, .csv, .ndjson, "
            ".npy, .parquet, .arrow); the job succeeds once it is written. An existing file "
            "is replaced only with `overwrite`"))
    overwrite: bool | None = Field(
        None, description="with `output`: replace the file if it exists (never one that a "
                          "running job reads, a read-only one or one with a second hard "
                          "link); default false")
    priority: Priority | Level | None = Field(
        None, description="a name, or 0 (lowest) to 9; default normal")
    deadline: Seconds | datetime | None = Field(
        None, description="seconds from now, or an ISO 8601 time with a timezone; at most 30 "
                          "days ahead")
    webhook_url: Url | None = Field(
        None, description="a public http(s) URL, told when the job ends; needs the tenant's "
                          "job secret (POST /v1/webhooks/job-secret)")
    retention: float | None = Field(None, ge=60, le=10 * 365 * 86400, description=(
        "seconds the finished job is kept (default: the tenant's, else 30 days)"))


_JOB_ID = "0f8b6a4e-3c1d-4e5f-9a7b-2c6d8e0f1a2b"
_LINKS: dict[str, Any] = {"self": f"/v1/jobs/{_JOB_ID}", "result": f"/v1/jobs/{_JOB_ID}/result"}
_SHA256 = "9d5e3f1c0b7a26e4d8c1f0a3b5e7d9c2a4f6b8d0e1c3a5f7b9d2e4c6a8f0b1d3"


class JobAccepted(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": _JOB_ID, "status": "queued", "model": "iris", "version": "1", "links": _LINKS}]})

    id: str
    status: JobStatus
    model: str
    version: str
    links: Links


class Job(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": _JOB_ID, "status": "succeeded", "model": "iris", "version": "1", "rows": 2,
         "rows_total": 2, "rows_done": 2, "percent": 100.0, "attempts": 1,
         "priority": "normal", "from_cache": False, "created_at": "2026-12-01T09:30:00.120Z",
         "started_at": "2026-12-01T09:30:00.126Z", "finished_at": "2026-12-01T09:30:00.131Z",
         "deadline": None, "retry_of": None, "links": _LINKS, "error": None}]})

    id: str
    status: JobStatus
    model: str
    version: str
    rows: int
    rows_total: int = Field(description="the same as rows")
    rows_done: int = Field(description="rows with results committed (bulk: chunk by chunk)")
    percent: float = Field(ge=0, le=100, description="rows_done of rows_total, in percent")
    attempts: int = Field(description="claims by a worker; a bulk job's: those of its most-claimed "
                                      "chunk. Above 1: it was retried after a worker died")
    priority: Priority
    from_cache: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline: datetime | None
    retry_of: str | None = Field(None, description="the job this one retries "
                                                   "(POST /v1/jobs/{id}/retry)")
    links: Links
    error: str | None = None


class Result(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"predictions": ["setosa", "virginica"],
         "probabilities": [[0.981, 0.019, 0.0], [0.0, 0.027, 0.973]],
         "model": "iris", "version": "1", "sha256": _SHA256}]})

    predictions: list[Any]
    probabilities: list[list[float]] | None = Field(
        None, description="classifiers: one list per row, in the order of the model's labels")
    model: str
    version: str
    sha256: str


class PredictRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": [[5.1, 3.5, 1.4, 0.2]]}]})

    inputs: Rows
    version: str | int | None = None


class PredictQuery(Strict):
    timeout: float | None = Field(
        None, gt=0, le=30, description="seconds to wait, at most PREDQ_SYNC_TIMEOUT_MAX (30); "
                                       "then 202 with the job")


class InputColumn(Strict):
    name: str
    type: Literal["number", "integer", "boolean", "string", "datetime"]
    nullable: bool = Field(description="may be missing (null, an empty CSV cell)")
    categories: list[Any] | None = Field(
        None, description="the values the fitted model knows (the first 1,000)")
    n_categories: int | None = None
    closed: bool | None = Field(
        None, description="values outside `categories` are refused (400); otherwise they go "
                          "to the model, which handles them as it was fitted to")


class InputSchema(Strict):
    columns: list[InputColumn] = Field(description="in the order list rows give them")
    input: Literal["dataframe", "array"] = Field(
        description="what the model is given: a pandas DataFrame with these dtypes, or an "
                    "array")
    ignored: list[str] | None = Field(
        None, description="columns the model drops: accepted in a body, never used")


class ModelVersion(Strict):
    name: str
    version: str
    kind: Literal["classifier", "regressor"]
    n_features: int
    feature_names: list[str]
    inputs: InputSchema = Field(description="the typed input schema every body is checked "
                                            "against")
    libraries: dict[str, str] | None = Field(
        None, description="LightGBM or XGBoost versions the artifact needs (workers must run "
                          "them)")
    sha256: str
    sklearn_version: str | None = Field(description="registered under; workers must run it")
    numpy_version: str | None = Field(
        description="registered under; workers must run it (null: registered before recorded)")
    artifact_format: Literal["joblib", "skops"]
    cache_ttl: int | None
    labels: list[Any] | None = None


class RolloutShares(Strict):
    shares: dict[str, float] = Field(description="version: the share of the jobs that name no "
                                                 "version it gets")
    shadow: dict[str, Any] | None = Field(description="the version a share of them also runs "
                                                      "on, compared, never delivered")


class ModelSummary(ModelVersion):
    versions: list[str]
    rollout: RolloutShares | None = Field(None, description="the operator's rollout; null: "
                                                            "jobs get the latest version")


class ModelList(Strict):
    models: list[ModelSummary]


class ModelDetail(ModelVersion):
    versions: list[ModelVersion]


class Attempt(Strict):
    at: datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None


class Delivery(Strict):
    id: str
    type: EventType
    url: str
    status: Literal["pending", "delivered", "dead"]
    next_attempt_at: datetime | None
    attempts: list[Attempt]


class Deliveries(Strict):
    events: list[Delivery]


class Redelivered(Strict):
    events: list[str]


class EndpointCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://hooks.example.com/predq", "events": ["job.succeeded", "job.failed"]}]})

    url: Url = Field(description="a public http(s) URL")
    events: list[EventType] | None = None


class Endpoint(Strict):
    id: str
    url: str | None
    events: list[EventType]
    disabled: bool
    disabled_reason: str | None
    created_at: datetime


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="whsec_...: shown once")
    previous_secret_valid_until: datetime | None = None


class EndpointList(Strict):
    endpoints: list[Endpoint]


class JobSecret(Strict):
    id: str
    secret: str = Field(description="whsec_...: shown once")
    previous_secret_valid_until: datetime | None = None


class Health(Strict):
    status: Literal["ok"]


class QueueState(Strict):
    depth: int = Field(description="jobs waiting: queued single jobs, and bulk jobs with chunks "
                                   "not yet predicted")
    chunks: int = Field(description="bulk chunks waiting (not yet claimed by a worker)")
    rows: int = Field(description="rows waiting: of queued jobs and of waiting chunks")
    oldest_age_seconds: float | None = Field(description="of the oldest waiting job or chunk")
    drain_per_second: float


class Ready(Strict):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
    queues: dict[str, QueueState] | None = None
    workers: int | None = None
