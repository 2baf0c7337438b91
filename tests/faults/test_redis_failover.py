"""predq on a Redis group behind Sentinel (a private primary, replica and three sentinels):
the API and a real worker follow a switch-over, and a publish that Redis acknowledged but had
not replicated when its master died is sent again by the reconciler from SQL. And without
Sentinel, a worker outlives its server's demotion to a replica."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine

from service.core.broker import celery_publisher
from service.core.messaging import PREDICT_QUEUES
from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.support.processes import LiveServer, WorkerProcess, free_port
from tests.support.sentinel import HOST, SentinelGroup, start_server, wait_until
from tests.support.tenants import Tenant, make_tenant

SETOSA = [5.1, 3.5, 1.4, 0.2]


class Site:
    """The API (in this process) and, once started, a worker, on the group's REDIS_URL."""

    def __init__(self, settings: Settings, engine: Engine, directory: Path,
                 cleanup: ExitStack) -> None:
        self.settings, self.engine, self.directory = settings, engine, directory
        self.cleanup = cleanup
        api = LiveServer(settings)
        cleanup.callback(api.stop)
        tenants = make_tenant(engine, api.url)
        self.tenant: Tenant = next(tenants)
        cleanup.callback(lambda: [None for _ in tenants])  # the tenant's clean-up
        self.worker: WorkerProcess | None = None

    def start_worker(self) -> WorkerProcess:
        self.worker = WorkerProcess(self.settings, self.directory / "worker.log")
        self.cleanup.callback(self.worker.stop)
        return self.worker

    def reconcile(self) -> dict[str, int]:
        """One reconciler run, told that the prediction queues hold nothing in Redis."""
        from service.jobs.aftercommit import job_ends
        from service.store.redisclient import redis_client
        from workers.app import make_celery
        from workers.maintenance import reconcile

        celery = make_celery(self.settings)
        client = redis_client(self.settings.redis_url)
        try:
            ends = job_ends(self.engine, client, celery_publisher(celery),
                            self.settings.webhook_max_inline_bytes)
            return reconcile(ends, self.settings, idle_queues=set(PREDICT_QUEUES))
        finally:
            client.close()
            celery.close()


def replica_backlog(master: redis.Redis) -> int:
    """Bytes the master holds for its replica that it could not send yet."""
    return sum(int(c["omem"]) for c in master.client_list(_type="replica"))


@pytest.fixture
def site(sentinel_group: SentinelGroup, settings: Settings, engine: Engine,
         models: dict[str, ModelInfo], tmp_path: Path) -> Iterator[Site]:
    with ExitStack() as cleanup:
        yield Site(settings.replace(redis_url=sentinel_group.url, republish_idle_after=0.5),
                   engine, tmp_path, cleanup)


def test_the_api_and_a_worker_follow_a_switch_over(
        site: Site, sentinel_group: SentinelGroup) -> None:
    worker = site.start_worker()
    before = site.tenant.submit("iris", [SETOSA])
    assert site.tenant.wait(before)["status"] == "succeeded"

    sentinel_group.failover()  # the worker's BRPOP is UNBLOCKED, its writes get READONLY
    after = site.tenant.submit("iris", [SETOSA])
    assert site.tenant.wait(after, timeout=90)["status"] == "succeeded"
    assert worker.proc.poll() is None, "the worker ended: " + worker.output()[-2000:]
    assert "Unrecoverable error" not in worker.output()


def test_a_publish_the_dead_master_had_not_replicated_is_sent_again_from_sql(
        site: Site, sentinel_group: SentinelGroup) -> None:
    old = sentinel_group.master()
    replica = next(port for port in sentinel_group.ports if port != old)
    master = sentinel_group.client(old)
    sentinel_group.procs[replica].send_signal(signal.SIGSTOP)  # replication stalls ...
    try:
        # ... and once the kernel's buffers towards the stopped replica are full, the rest of
        # the stream waits in the master's memory: what is written now reaches only the master.
        master.set("filler", b"x" * (32 << 20))
        wait_until(lambda: replica_backlog(master) > 0, "the replication stream to back up")
        job = site.tenant.submit("iris", [SETOSA])  # 202: committed; published to the master
        # just after (the API's committer answers once the group commits, then publishes)
        wait_until(lambda: sum(master.llen(q) for q in PREDICT_QUEUES) == 1,
                   "the job's message on the master")
        assert replica_backlog(master) > 0
        sentinel_group.procs[old].kill()  # ... which dies before its replica got the message
        sentinel_group.procs[old].wait()
    finally:
        sentinel_group.procs[replica].send_signal(signal.SIGCONT)
    wait_until(lambda: sentinel_group.master() == replica, "Sentinel to promote the replica",
               timeout=30)
    promoted = sentinel_group.client(replica)
    assert sum(promoted.llen(q) for q in PREDICT_QUEUES) == 0  # Redis lost an acked write
    assert site.tenant.get(f"/v1/jobs/{job}").json()["status"] == "queued"

    site.start_worker()
    deadline = time.monotonic() + 60
    while site.reconcile()["republished"] == 0:  # the job's row in SQL is the truth
        assert time.monotonic() < deadline, "the reconciler never sent the job again"
        time.sleep(0.5)
    finished = site.tenant.wait(job, timeout=60)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1


def test_a_worker_outlives_its_server_turning_into_a_replica(
        settings: Settings, engine: Engine, models: dict[str, ModelInfo], tmp_path: Path) -> None:
    """No Sentinel between (a managed Redis that fails over behind one address): the server
    under the worker becomes a replica, answers its BRPOP with UNBLOCKED and every write with
    READONLY, then becomes a master again. Celery ends a worker on such errors unless told to
    retry them (celery#7946); predq's worker reconnects and goes on."""
    ports = [free_port(), free_port()]
    servers = [start_server(tmp_path, port) for port in ports]
    with ExitStack() as cleanup:
        for proc in servers:
            cleanup.callback(proc.kill)
        site = Site(settings.replace(redis_url=f"redis://{HOST}:{ports[0]}/0"), engine,
                    tmp_path, cleanup)
        worker = site.start_worker()
        first = redis.Redis(HOST, ports[0])
        first.replicaof(HOST, ports[1])
        wait_until(lambda: "READONLY" in worker.output() or "UNBLOCKED" in worker.output(),
                   "the worker to meet the demoted server", timeout=60)
        first.replicaof("NO", "ONE")
        job = site.tenant.submit("iris", [SETOSA])
        assert site.tenant.wait(job, timeout=90)["status"] == "succeeded"
        assert worker.proc.poll() is None, "the worker ended: " + worker.output()[-2000:]
