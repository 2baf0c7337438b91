"""A rollout's shadows with real processes: a shadow whose message was lost with Redis is sent
again by the reconciler once the shadow queue is empty (the jobs never wait for it); a bulk
job's chunk shadows run on the chunk worker."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import func, select

from service.core.messaging import (
    CHUNK_SHADOW_QUEUE,
    MAINTENANCE_QUEUE,
    PREDICT_QUEUES,
    SHADOW_QUEUE,
)
from service.store.db import shadow_results
from tests.faults.conftest import Stack
from tests.support.rollouts import FEATURES, as_operator, iris_rows, registered_versions


def test_lost_shadow_messages_are_sent_again_and_answered(stack: Callable[..., Stack]) -> None:
    s = stack(republish_idle_after=0.5)
    with registered_versions(s.engine, s.settings) as versions, \
            as_operator(s.engine, s.api.url) as ops:
        put = ops.http.put(f"{s.api.url}/v1/models/{versions.name}/rollout", timeout=30,
                           json={"weights": {"1": 100}, "shadow": {"version": "2"}})
        assert put.status_code == 200, put.text
        # A worker of the jobs' queues only: the shadow messages wait in Redis, then are lost.
        s.start_worker(",".join((MAINTENANCE_QUEUE, *PREDICT_QUEUES)))
        tenant = s.tenant()
        ids = [tenant.submit(versions.name, iris_rows(2, seed)) for seed in range(5)]
        for job_id in ids:
            assert tenant.wait(job_id)["status"] == "succeeded"  # never waits for its shadow
        assert s.redis_queue_length(SHADOW_QUEUE) >= 1
        s.kill_redis()
        s.start_redis()
        s.start_worker()  # every queue, the shadow queue last
        time.sleep(0.6)  # past republish_idle_after
        assert s.reconcile(idle_queues={SHADOW_QUEUE})["shadows"] == len(ids)
        deadline = time.monotonic() + 30
        while answered(s, ids) < len(ids):
            assert time.monotonic() < deadline, "shadows not answered"
            time.sleep(0.2)
        assert s.reconcile(idle_queues={SHADOW_QUEUE})["shadows"] == 0  # nothing lost now
        shown = ops.get(f"/v1/jobs/{ids[0]}/shadow").json()
        assert shown["version"] == "1" and shown["shadow"]["version"] == "2"


def answered(s: Stack, ids: list[str]) -> int:
    with s.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(shadow_results)
                                .where(shadow_results.c.job_id.in_(ids))).scalar_one())


def test_bulk_chunk_shadows_run_on_the_chunk_worker_of_the_production_topology(
    stack: Callable[..., Stack],
) -> None:
    """Single jobs' worker and the bulk chunk worker side by side (`predq worker`): a bulk
    job's chunk shadows are read by the chunk worker alone (the single jobs' worker does not
    consume their queue), and answered."""
    s = stack()
    with registered_versions(s.engine, s.settings) as versions, \
            as_operator(s.engine, s.api.url) as ops:
        put = ops.http.put(f"{s.api.url}/v1/models/{versions.name}/rollout", timeout=30,
                           json={"weights": {"1": 100}, "shadow": {"version": "2"}})
        assert put.status_code == 200, put.text
        s.start_split_workers()
        assert s.worker is not None and CHUNK_SHADOW_QUEUE not in s.worker.output()
        tenant = s.tenant()
        rows = iris_rows(1000, 3)
        body = "\n".join(",".join(map(str, r)) for r in [FEATURES, *rows]) + "\n"
        upload = tenant.post("/v1/jobs", params={"model": versions.name}, data=body,
                             headers={"Content-Type": "text/csv"})
        assert upload.status_code == 202, upload.text
        job_id = upload.json()["id"]
        assert tenant.wait(job_id)["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while (shadow := ops.get(f"/v1/jobs/{job_id}/shadow").json()["shadow"])["status"] \
                == "pending":
            assert time.monotonic() < deadline, shadow
            time.sleep(0.1)
        assert shadow["status"] == "succeeded"
        assert shadow["chunks_answered"] == shadow["chunks"]
