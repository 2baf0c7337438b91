"""The opt-in prediction cache: a repeated single-row input is answered without a worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.registry import ModelInfo, add_model
from tests.realtime.conftest import SETOSA, Stack

OTHER = [6.7, 3.0, 5.2, 2.3]


def test_cached_single_row_skips_the_worker_and_a_new_version_misses(
    stack: Callable[..., Stack], engine: Engine, settings: Settings,
    models: dict[str, ModelInfo],
) -> None:
    name = f"cached-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        add_model(conn, settings.model_dir, models["iris"].artifact_path, name, "1",
                  cache_ttl=60)
    s = stack()
    s.start_worker()
    tenant = s.tenant()
    # (Longer than the default 5 s: a worker just started, on a machine the suite keeps busy.)
    first = tenant.post(f"/v1/models/{name}/predict?timeout=30", json={"inputs": [SETOSA]})
    assert first.status_code == 200, first.text
    first_job = tenant.get(first.headers["Content-Location"].removesuffix("/result")).json()
    assert first_job["from_cache"] is False and first_job["attempts"] == 1

    assert s.worker is not None
    s.worker.stop()  # from here on, only the cache can answer
    again = tenant.post(f"/v1/models/{name}/predict?timeout=2", json={"inputs": [SETOSA]})
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    job = tenant.get(again.headers["Content-Location"].removesuffix("/result")).json()
    assert job["from_cache"] is True and job["status"] == "succeeded"
    assert job["attempts"] == 0  # recorded, never claimed by a worker
    async_hit = tenant.post("/v1/jobs", json={"model": name, "inputs": [SETOSA]})
    assert async_hit.status_code == 202 and async_hit.json()["status"] == "succeeded"

    # Another row, several rows, or a new version of the model: not served from cache.
    miss = tenant.post(f"/v1/models/{name}/predict?timeout=0.3", json={"inputs": [OTHER]})
    assert miss.status_code == 202
    two_rows = tenant.post(f"/v1/models/{name}/predict?timeout=0.3",
                           json={"inputs": [SETOSA, SETOSA]})
    assert two_rows.status_code == 202
    with engine.begin() as conn:
        add_model(conn, settings.model_dir, models["iris"].artifact_path, name, "2",
                  cache_ttl=60)  # the same artifact, even: its entries are its own
    v2 = tenant.post(f"/v1/models/{name}/predict?timeout=0.3",
                     json={"inputs": [SETOSA], "version": "2"})
    assert v2.status_code == 202, v2.text
    s.start_worker()
    assert tenant.wait(v2.json()["id"])["from_cache"] is False


def test_models_without_a_ttl_are_never_cached(stack: Callable[..., Stack]) -> None:
    s = stack()
    s.start_worker()
    tenant = s.tenant()
    for _ in range(2):
        response = tenant.post("/v1/models/iris/predict?timeout=30", json={"inputs": [SETOSA]})
        assert response.status_code == 200, response.text
        job = tenant.get(response.headers["Content-Location"].removesuffix("/result")).json()
        assert job["from_cache"] is False and job["attempts"] == 1
