"""A private stack per test: its own redis-server (so it can be killed), worker and API."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.cli import embedded
from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.support.processes import LiveServer, WorkerProcess
from tests.support.tenants import Tenant, make_tenant


class Stack:
    def __init__(self, settings: Settings, directory: Path, engine: Engine) -> None:
        self.settings, self.directory, self.engine = settings, directory, engine
        self.redis: subprocess.Popen[bytes] | None = embedded.start_redis(directory)
        self.worker: WorkerProcess | None = None
        self.chunk_worker: WorkerProcess | None = None
        self.deliverer: WorkerProcess | None = None
        self.api = LiveServer(settings)
        self._tenants: list[Iterator[Tenant]] = []

    def start_worker(self, queues: str | None = None, **overrides: object) -> WorkerProcess:
        if self.worker is not None:
            self.worker.stop()
        n = len(list(self.directory.glob("worker*.log")))
        self.worker = WorkerProcess(self.settings.replace(**overrides),
                                    self.directory / f"worker{n}.log", queues=queues)
        return self.worker

    def start_split_workers(self, **overrides: object) -> None:
        """The production topology: a worker of single jobs (every priority), and a worker of
        bulk chunks beside it (its own processes, a prefetch of 1, a lower CPU priority)."""
        from service.cli.processes import DEFAULT_QUEUES

        self.start_worker(DEFAULT_QUEUES, **overrides)
        self.chunk_worker = WorkerProcess(self.settings.replace(**overrides),
                                          self.directory / "chunks.log", chunks=True)

    def start_deliverer(self) -> WorkerProcess:
        self.deliverer = WorkerProcess(self.settings, self.directory / "deliverer.log",
                                       deliverer=True)
        return self.deliverer

    def tenant(self) -> Tenant:
        gen = make_tenant(self.engine, self.api.url)
        self._tenants.append(gen)
        return next(gen)

    def kill_redis(self) -> None:
        """SIGKILL: everything queued in Redis is gone (it keeps nothing on disk)."""
        assert self.redis is not None
        self.redis.kill()
        self.redis.wait()
        self.redis = None

    def start_redis(self) -> None:
        self.redis = embedded.start_redis(self.directory)

    def _redis_count(self, command: str, key: str) -> int:
        import redis

        client = redis.Redis.from_url(self.settings.redis_url)
        try:
            return int(client.execute_command(command, key))
        finally:
            client.close()

    def redis_queue_length(self, queue: str) -> int:
        return self._redis_count("LLEN", queue)

    def redis_unacked(self) -> int:
        """Messages a worker has taken and not yet acknowledged (kombu's `unacked` hash)."""
        return self._redis_count("HLEN", "unacked")

    def reconcile(self, idle_queues: Collection[str] = ()) -> dict[str, int]:
        """One reconciler run; `idle_queues`: the queues it may take as empty in Redis."""
        from service.core.broker import celery_publisher
        from service.jobs.aftercommit import job_ends
        from service.store.redisclient import redis_client
        from workers.app import make_celery
        from workers.maintenance import reconcile

        celery = make_celery(self.settings)
        client = redis_client(self.settings.redis_url)
        try:
            ends = job_ends(self.engine, client, celery_publisher(celery),
                            self.settings.webhook_max_inline_bytes,
                            min_slots=self.settings.bulk_window)
            return reconcile(ends, self.settings, idle_queues=idle_queues)
        finally:
            client.close()
            celery.close()

    def close(self) -> None:
        for gen in self._tenants:
            for _ in gen:  # runs the tenant's cleanup
                pass
        if self.worker is not None:
            self.worker.stop()
        if self.chunk_worker is not None:
            self.chunk_worker.stop()
        if self.deliverer is not None:
            self.deliverer.stop()
        self.api.stop()
        if self.redis is not None:
            embedded.stop(self.redis)


@pytest.fixture
def stack(settings: Settings, engine: Engine, models: dict[str, ModelInfo],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """stack(**settings overrides) -> a running private stack, closed after the test."""
    made: list[Stack] = []

    def make(**overrides: object) -> Stack:
        directory = tmp_path_factory.mktemp("stack")
        private = settings.replace(redis_url=f"unix://{directory / 'redis.sock'}", **overrides)
        made.append(Stack(private, directory, engine))
        return made[-1]

    yield make
    for s in made:
        s.close()
