"""Request and response shapes of the dashboard's endpoints, for the OpenAPI description (the
rest of the API's are in schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from service.api.schemas import Delivery, EventType, Job, JobStatus, Priority, Strict


class JobListQuery(Strict):
    limit: int = Field(50, ge=1, le=500, description="most jobs to list")
    status: JobStatus | None = Field(None, description="only jobs in this status")
    model: str | None = Field(None, min_length=1, max_length=100, pattern="^[^\x00]*$",
                              description="only jobs of the model of this name (any version); "
                                          "no NUL character (no name holds one)")
    priority: Priority | None = Field(None, description="only jobs in this priority's queue")
    id: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{1,36}$",
                           description="only jobs whose id starts with this (case ignored)")


class JobList(Strict):
    jobs: list[Job] = Field(description="newest first, each as GET /v1/jobs/{id} shows it")


class StatsQuery(Strict):
    minutes: int = Field(15, ge=1, le=60, description="how many minutes back, this one included")


class StatsMinute(Strict):
    minute: datetime = Field(description="start of the minute (UTC)")
    finished: int = Field(description="jobs that succeeded or failed in this minute")
    succeeded: int
    failed: int
    rows: int = Field(description="rows done in this minute: those of small jobs that finished, "
                                  "and of bulk jobs' chunks that committed")
    p50_ms: float | None = Field(description="median submit-to-finish time; null: none finished")
    p99_ms: float | None


class Stats(Strict):
    jobs_per_second: float = Field(ge=0, description="jobs finished, over the last 60 seconds")
    rows_per_second: float = Field(ge=0, description="rows done, over the last 60 seconds")
    minutes: list[StatsMinute] = Field(description="oldest first; the last one is in progress")


class FailuresQuery(Strict):
    limit: int = Field(50, ge=1, le=500, description="most events to list")


class WebhookFailure(Strict):
    id: str
    job_id: str
    endpoint_id: str
    url: str
    type: EventType
    status: Literal["pending", "dead"]
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="pending: when it is tried again")
    created_at: datetime
    finished_at: datetime | None


class WebhookFailures(Strict):
    events: list[WebhookFailure] = Field(description="most recent first")


class TimelineStep(Strict):
    step: Literal["created", "published", "started", "finished"] = Field(
        description="published: its last message sent to a queue; started: its last attempt "
                    "(a bulk job: its first chunk)")
    at: datetime | None = Field(description="null: not reached (yet)")


class ChunkCounts(Strict):
    total: int
    pending: int
    running: int
    done: int
    attempts: int = Field(description="claims of all chunks; above `total`: some were retried")


class Preview(Strict):
    rows: int = Field(description="rows of the whole result")
    predictions: list[Any] = Field(description="the first ten rows' predictions at most")
    probabilities: list[list[float]] | None = Field(
        description="classifiers: the same rows' probabilities, in the order of `labels`")
    labels: list[Any] | None


class Actions(Strict):
    cancel: bool = Field(description="the job is queued or running and the key may submit")
    redeliver: bool = Field(description="the job ended with webhook events and the key may "
                                        "submit")


class JobOverview(Strict):
    job: Job
    timeline: list[TimelineStep] = Field(description="in order: created, published, started, "
                                                     "finished")
    chunks: ChunkCounts | None = Field(description="bulk jobs only")
    preview: Preview | None = Field(description="once it succeeded")
    deliveries: list[Delivery] = Field(description="as GET /v1/jobs/{id}/deliveries shows them")
    actions: Actions = Field(description="what this key may do to the job now")


class Worker(Strict):
    name: str = Field(description="host:pid of the worker's main process")
    host: str
    pid: int
    node: str = Field(description="Celery's node name")
    queues: list[str] = Field(description="the queues it consumes")
    concurrency: int = Field(description="pool processes (or threads)")
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_seconds: float = Field(ge=0)
    stale: bool = Field(description="no heartbeat for stale_after_seconds: stopped, hung or cut "
                                    "off from Redis")
    jobs_total: int = Field(ge=0, description="jobs its pool finished since it started")
    rows_total: int = Field(ge=0, description="rows its pool finished since it started")
    jobs_per_second: float = Field(ge=0, description="over its last one or two heartbeats")
    rows_per_second: float = Field(ge=0)


class Workers(Strict):
    stale_after_seconds: float
    workers: list[Worker] = Field(description="live ones first, then stale ones, by name")
