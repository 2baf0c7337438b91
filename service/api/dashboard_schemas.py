"""Request and response shapes of the dashboard's endpoints, for the OpenAPI description (the
rest of the API's are in schemas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from service.api.schemas import EventType, Job, JobStatus, Strict


class JobListQuery(Strict):
    limit: int = Field(50, ge=1, le=500, description="most jobs to list")
    status: JobStatus | None = Field(None, description="only jobs in this status")


class JobList(Strict):
    jobs: list[Job] = Field(description="newest first, each as GET /v1/jobs/{id} shows it")


class StatsQuery(Strict):
    minutes: int = Field(15, ge=1, le=60, description="how many minutes back, this one included")


class StatsMinute(Strict):
    minute: datetime = Field(description="start of the minute (UTC)")
    finished: int = Field(description="jobs that succeeded or failed in this minute")
    succeeded: int
    failed: int
    p50_ms: float | None = Field(description="median submit-to-finish time; null: none finished")
    p99_ms: float | None


class Stats(Strict):
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
