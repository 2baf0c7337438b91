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
    since: datetime | None = Field(None, description="only jobs created at or after this time "
                                                     "(ISO 8601 with a timezone)")
    until: datetime | None = Field(None, description="only jobs created before this time")
    sort: Literal["newest", "oldest"] = Field("newest", description="by creation time")
    cursor: str | None = Field(None, pattern=r"^[0-9]{1,16}\.[0-9a-fA-F-]{1,36}$",
                               description="the `next` of the previous page (send the same "
                                           "filters with it)")


class JobList(Strict):
    jobs: list[Job] = Field(description="in the order `sort` asks, each as GET /v1/jobs/{id} "
                                        "shows it")
    next: str | None = Field(description="more jobs match: send this as `cursor` for the next "
                                         "page; null: this is the last page")


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


class Waiting(Strict):
    jobs: int = Field(description="queued single jobs, and bulk jobs with chunks waiting")
    rows: int = Field(description="their rows still waiting")


class Stats(Strict):
    jobs_per_second: float = Field(ge=0, description="jobs finished, over the last 60 seconds")
    rows_per_second: float = Field(ge=0, description="rows done, over the last 60 seconds")
    minutes: list[StatsMinute] = Field(description="oldest first; the last one is in progress")
    waiting: dict[str, Waiting] = Field(
        default_factory=dict, description="the tenant's work waiting, per queue (read at most "
                                          "every PREDQ_DEPTH_REFRESH_INTERVAL seconds)")


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
    stopped: int = Field(description="chunks that never finished because the job ended "
                                     "first (failed, cancelled, expired)")
    attempts: int = Field(description="claims of all chunks; above `total`: some were retried")


class Preview(Strict):
    rows: int = Field(description="rows of the whole result")
    predictions: list[Any] = Field(description="the first ten rows' predictions at most")
    probabilities: list[list[float]] | None = Field(
        description="classifiers: the same rows' probabilities, in the order of `labels`")
    labels: list[Any] | None


class Actions(Strict):
    cancel: bool = Field(description="the job is queued or running and the key may submit")
    retry: bool = Field(description="the job has ended and the key may submit: "
                                    "POST /v1/jobs/{id}/retry")
    redeliver: bool = Field(description="the job ended with webhook events and the key may "
                                        "submit")


class JobInput(Strict):
    source: Literal["json", "upload", "file"] = Field(
        description="rows in a JSON body, a bulk upload, or a file under the data root")
    format: str | None = Field(description="json, csv, ndjson, npy, parquet, arrow")
    rows: int
    columns: int = Field(description="the model's features")


class JobOverview(Strict):
    job: Job
    input: JobInput
    workers: list[str] = Field(description="the workers (host:pid) that claimed it (a bulk "
                                           "job: its chunks); empty before the first claim")
    timeline: list[TimelineStep] = Field(description="in order: created, published, started, "
                                                     "finished")
    chunks: ChunkCounts | None = Field(description="bulk jobs only")
    preview: Preview | None = Field(description="once it succeeded")
    deliveries: list[Delivery] = Field(description="as GET /v1/jobs/{id}/deliveries shows them")
    actions: Actions = Field(description="what this key may do to the job now")


class WorkerProcess(Strict):
    pid: int
    role: Literal["main", "pool"]
    cpu_percent: float = Field(ge=0, description="of one core, since the previous heartbeat")
    rss_bytes: int = Field(ge=0, description="resident memory")
    busy: bool = Field(description="a pool process running a task")
    task: str | None = Field(description="what it runs (busy), e.g. `3 jobs` or `1 bulk "
                                          "chunk`: no job ids, workers are shared")
    since: datetime | None = Field(description="busy or idle since; null: no task yet")


class Worker(Strict):
    name: str = Field(description="host:pid of the worker's main process")
    host: str
    pid: int
    node: str = Field(description="Celery's node name")
    role: Literal["predict", "chunks", "webhooks", "maintenance"] = Field(
        description="predicts single jobs (a predict queue), bulk chunks only, delivers "
                    "webhooks, or runs maintenance only")
    queues: list[str] = Field(description="the queues it consumes")
    concurrency: int = Field(description="pool processes (or threads)")
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_seconds: float = Field(ge=0)
    stale: bool = Field(description="no heartbeat for stale_after_seconds: stopped, hung or cut "
                                    "off from Redis")
    jobs_total: int = Field(ge=0, description="jobs its pool finished since it started")
    rows_total: int = Field(ge=0, description="rows its pool finished since it started")
    jobs_per_second: float = Field(ge=0, description="over the last minute")
    rows_per_second: float = Field(ge=0)
    processes: list[WorkerProcess] = Field(description="main process first; empty when stale")


class Workers(Strict):
    stale_after_seconds: float
    workers: list[Worker] = Field(description="live ones first, then stale ones, by name")


class QueueHistoryQuery(Strict):
    minutes: int = Field(15, ge=1, le=60, description="how many minutes back")


class QueueDepth(Strict):
    jobs: int = Field(ge=0, description="jobs waiting: queued single jobs, and bulk jobs with "
                                        "chunks not done")
    chunks: int = Field(ge=0, description="bulk chunks not done yet")
    rows: int = Field(ge=0, description="rows of those jobs and chunks")
    oldest_age_seconds: float | None = Field(description="the longest wait; null: none waits")


class QueueSample(Strict):
    at: datetime
    queues: dict[str, QueueDepth] = Field(description="by queue name")


class QueueHistory(Strict):
    every_seconds: int = Field(description="one sample per this many seconds")
    samples: list[QueueSample] = Field(description="oldest first")


class WebhookFailureGroup(Strict):
    endpoint_id: str
    url: str
    status: Literal["pending", "dead"]
    last_error: str | None
    events: int = Field(ge=1, description="failing events in this group")
    attempts: int = Field(ge=0, description="their delivery attempts, added up")
    first_at: datetime = Field(description="the oldest event's creation")
    last_at: datetime = Field(description="the newest event's creation")
    job_id: str = Field(description="the newest event's job")


class WebhookFailureGroups(Strict):
    groups: list[WebhookFailureGroup] = Field(description="the most recent first")
