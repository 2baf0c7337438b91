"""Prometheus metrics: every family predq exports, and the few helpers that record them.

Each process of a deployment (gunicorn workers, Celery pool processes, the deliverer) writes its
samples to files in `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode); the
API's `GET /metrics` (service/api/metrics.py) adds them up. prometheus_client chooses its mode
when it is first imported, so the CLI sets the variable before it starts those processes
(`metricsdir.export`). Without it, as in the test suite's in-process server, each process keeps
its own samples in the default registry.
"""

from __future__ import annotations

import os
from collections import Counter as TallyCounter
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from prometheus_client import Counter, Histogram

from service.core.times import as_utc


class Committed(Protocol):
    """What the job counters read of a committed job."""

    @property
    def tenant(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def model_id(self) -> int: ...


    @property
    def n_rows(self) -> int: ...

#: Where this process's samples go; None: single-process mode. Read once, as prometheus_client
#: itself does at import.
MULTIPROC_DIR: str | None = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

JOBS_SUBMITTED = Counter(
    "predq_jobs_submitted_total", "Jobs the API committed.", ["model", "tenant"])
ROWS_SUBMITTED = Counter(
    "predq_rows_submitted_total", "Rows of the jobs the API committed (a bulk job counts each "
    "of its rows).", ["model", "tenant"])
ROWS_FINISHED = Counter(
    "predq_rows_finished_total", "Rows of the jobs that reached a final state.",
    ["model", "status", "tenant"])
JOBS_FINISHED = Counter(
    "predq_jobs_finished_total",
    "Jobs that reached a final state: succeeded, failed, cancelled or expired (by a worker, a "
    "client's cancel, the reconciler, or at once from the prediction cache).",
    ["model", "status", "tenant"])
REJECTED_JOBS = Counter(
    "predq_rejected_jobs_total",
    "Jobs refused with 429: the queue (queue_full) or the tenant's share of it (tenant_share) "
    "was full.", ["queue", "reason"])
BATCH_SIZE = Histogram(
    "predq_batch_size_jobs", "Jobs a worker claimed and predicted as one micro-batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384))
PREDICT_DURATION = Histogram(
    "predq_predict_duration_seconds", "One predict() call on a micro-batch's rows of one model.",
    ["model"], buckets=(0.0001, 0.00025, 0.0005, *_LATENCY))
JOB_DURATION = Histogram(
    "predq_job_duration_seconds",
    "From the job's commit by the API to the commit of its outcome by a worker.",
    ["model"], buckets=(*_LATENCY, 60.0, 300.0, 1800.0, 3600.0))
HTTP_REQUESTS = Counter(
    "predq_http_requests_total", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "predq_http_request_duration_seconds",
    "Time to answer an HTTP request (a synchronous predict includes its wait).",
    ["method", "route", "status"], buckets=_LATENCY)
WEBHOOK_ATTEMPTS = Counter(
    "predq_webhook_attempts_total",
    "Webhook delivery attempts: delivered, failed (retried later) or dead (given up).",
    ["outcome"])
RESULTS_DISCARDED = Counter(
    "predq_results_discarded_total",
    "Outcomes a worker computed and did not write: its claim had lost the job (claim_lost: "
    "its lease ended and another worker took the job over) or the job had ended (not_running: "
    "cancelled meanwhile).", ["reason"])
UPLOAD_CHUNKS_ABANDONED = Counter(
    "predq_upload_chunks_abandoned_total",
    "Stored chunks of uploads that never became a job, deleted by the reconciler.")
CACHE_REQUESTS = Counter(
    "predq_cache_requests_total",
    "Prediction cache look-ups of single-row inputs of cached models: hit, miss or error.",
    ["result"])


# Per model version (a rollout's versions side by side): no tenant label, and at most
# `MAX_VERSION_LABELS` versions of a model per process (the rest count as "other"), so the
# series stay bounded however many versions are registered.
VERSION_JOBS_FINISHED = Counter(
    "predq_version_jobs_finished_total",
    "Jobs that reached a final state, by model version (status failed: its failures).",
    ["model", "version", "status"])
VERSION_ROWS_FINISHED = Counter(
    "predq_version_rows_finished_total", "Rows of jobs that reached a final state, by version.",
    ["model", "version", "status"])
VERSION_JOB_DURATION = Histogram(
    "predq_version_job_duration_seconds", "Submit-to-result time of jobs, by model version.",
    ["model", "version"], buckets=_LATENCY)
SHADOW_RUNS = Counter(
    "predq_shadow_runs_total", "Shadow runs of a rollout answered, by shadow version.",
    ["model", "version", "status"])
MAX_VERSION_LABELS = 8
_version_labels: dict[str, set[str]] = {}


def version_label(model: str, version: str) -> str:
    """`version`, or "other" once this process has labelled `MAX_VERSION_LABELS` of `model`."""
    seen = _version_labels.setdefault(model, set())
    if version in seen:
        return version
    if len(seen) >= MAX_VERSION_LABELS:
        return "other"
    seen.add(version)
    return version


def shadow_ran(model: str, version: str, succeeded: bool) -> None:
    SHADOW_RUNS.labels(model, version_label(model, version),
                       "succeeded" if succeeded else "failed").inc()


def jobs_committed(new_jobs: Iterable[Committed]) -> None:
    """Count committed jobs (one answered from the prediction cache ends at once as well:
    its Ending counts that)."""
    submitted: TallyCounter[tuple[str, str]] = TallyCounter()
    rows: TallyCounter[tuple[str, str]] = TallyCounter()
    for job in new_jobs:  # a group is up to hundreds of jobs of a few models and tenants
        labels = (job.model or str(job.model_id), job.tenant)
        submitted[labels] += 1
        rows[labels] += job.n_rows
    for (model, tenant), n in submitted.items():
        JOBS_SUBMITTED.labels(model, tenant).inc(n)
        ROWS_SUBMITTED.labels(model, tenant).inc(rows[(model, tenant)])


def job_ended(model: str, tenant: str, status: str, created_at: datetime | None,
              now: datetime, rows: int = 1, version: str = "") -> None:
    """Count a job that reached a final state, by model and by model version; for an outcome
    (succeeded or failed), observe its submit-to-result time as well."""
    label = version_label(model, version)
    JOBS_FINISHED.labels(model, status, tenant).inc()
    ROWS_FINISHED.labels(model, status, tenant).inc(rows)
    VERSION_JOBS_FINISHED.labels(model, label, status).inc()
    VERSION_ROWS_FINISHED.labels(model, label, status).inc(rows)
    if created_at is not None and status in ("succeeded", "failed"):
        seconds = max(0.0, (now - as_utc(created_at)).total_seconds())
        JOB_DURATION.labels(model).observe(seconds)
        VERSION_JOB_DURATION.labels(model, label).observe(seconds)


def batch_claimed(n_jobs: int) -> None:
    if n_jobs:
        BATCH_SIZE.observe(n_jobs)


def process_exited(pid: int) -> None:
    """Multiprocess bookkeeping when a gunicorn or Celery pool process ends (its counters stay
    counted; only live gauges of the pid would go)."""
    if MULTIPROC_DIR is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, MULTIPROC_DIR)
