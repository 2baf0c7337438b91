"""Request and response shapes of a model's rollout, its history, the comparison of two of
its versions and a job's shadow result, for the OpenAPI description."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from service.api.schemas import Open, Strict


class ShadowSpec(Strict):
    version: str = Field(description="the version a share of the jobs also runs on")
    percent: float = Field(100, ge=0, le=100, description="the share of the jobs that follow "
                                                         "the rollout, 0 to 100")


class RolloutSet(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"weights": {"1": 95, "2": 5}},
        {"weights": {"1": 100}, "shadow": {"version": "2", "percent": 100}}]})

    weights: dict[str, float] = Field(description="version: weight (>= 0, summing to more "
                                                  "than 0); shares are weight / sum")
    shadow: ShadowSpec | None = None


class Rollout(Strict):
    model: str
    weights: dict[str, float] | None = Field(description="null: no rollout, jobs that name "
                                                         "no version get the latest")
    shares: dict[str, float] | None
    shadow: ShadowSpec | None
    latest: str = Field(description="the latest registered version")


class RolloutChange(Strict):
    at: datetime
    by: str = Field(description="the key that made the change, or the command line")
    from_: dict[str, Any] | None = Field(alias="from", description="null: latest registered")
    to: dict[str, Any] | None = Field(description="null: latest registered")


class RolloutHistory(Strict):
    model: str
    changes: list[RolloutChange]


class CompareQuery(Strict):
    baseline: str = Field(description="the version compared against")
    candidate: str = Field(description="the version compared")
    limit: int = Field(10_000, ge=1, le=100_000,
                       description="the newest shadowed jobs read (their rows all count)")


class Latency(Strict):
    p50: float | None
    p99: float | None


class VersionFigures(Strict):
    answered: int
    failures: int
    latency_ms: Latency


class Comparison(Open):
    model: str
    baseline: str
    candidate: str
    kind: str
    jobs: int = Field(description="jobs both versions answered")
    rows: int = Field(description="their rows")
    agreement: float | None = Field(description="the share of rows with equal predictions "
                                                "(null: no rows yet)")
    pairs: int = Field(description="shadowed jobs read, answered or not")
    limit: int
    versions: dict[str, VersionFigures]
    confusion: dict[str, dict[str, int]] | None = Field(
        None, description="classifiers: rows by baseline label, then candidate label")
    mean_abs_diff: float | None = Field(None, description="regressors")
    max_abs_diff: float | None = Field(None, description="regressors")


class ShadowAnswer(Strict):
    version: str
    status: str = Field(description="pending, succeeded or failed")
    result: dict[str, Any] | None
    error: str | None
    seconds: float | None
    created_at: datetime | None
    chunks: int | None = Field(None, description="a bulk job: its chunks, each shadowed")
    chunks_answered: int | None = Field(None, description="a bulk job: chunks answered so far")


class JobShadow(Strict):
    job_id: str
    tenant: str
    model: str
    version: str
    status: str
    shadow: ShadowAnswer | None = Field(description="null: the job had no shadow")
