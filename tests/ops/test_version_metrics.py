"""Per-version metrics of a rollout: counted by model version, without tenant, and bounded (a
process labels at most MAX_VERSION_LABELS versions of a model; the rest count as "other")."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prometheus_client import REGISTRY

from service.core.times import utcnow
from service.ops import metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ended_jobs_are_counted_per_version_with_their_failures_and_latency() -> None:
    model, now = f"m-{uuid.uuid4().hex[:8]}", utcnow()
    metrics.job_ended(model, "acme", "succeeded", now - timedelta(seconds=0.2), now, 3, "1")
    metrics.job_ended(model, "acme", "failed", now - timedelta(seconds=0.1), now, 2, "2")
    metrics.job_ended(model, "beta", "succeeded", now - timedelta(seconds=0.1), now, 1, "2")
    jobs = "predq_version_jobs_finished_total"
    assert sample(jobs, model=model, version="1", status="succeeded") == 1
    assert sample(jobs, model=model, version="2", status="succeeded") == 1  # both tenants' jobs
    assert sample(jobs, model=model, version="2", status="failed") == 1
    assert sample("predq_version_rows_finished_total", model=model, version="2",
                  status="failed") == 2
    assert sample("predq_version_job_duration_seconds_count", model=model, version="2") == 2
    assert sample("predq_version_job_duration_seconds_sum", model=model,
                  version="1") >= 0.2


def test_a_model_labels_at_most_eight_versions_the_rest_count_as_other() -> None:
    model, now = f"m-{uuid.uuid4().hex[:8]}", utcnow()
    for version in range(12):
        metrics.job_ended(model, "acme", "succeeded", now, now, 1, str(version))
    counted = {v: sample("predq_version_jobs_finished_total", model=model, version=v,
                         status="succeeded") for v in [*map(str, range(12)), "other"]}
    assert [counted[str(v)] for v in range(8)] == [1.0] * 8
    assert [counted[str(v)] for v in range(8, 12)] == [0.0] * 4
    assert counted["other"] == 4
    metrics.shadow_ran(model, "3", succeeded=False)
    assert sample("predq_shadow_runs_total", model=model, version="3", status="failed") == 1
