"""The worker process's composition root: every object a task uses, built once per process
from the settings (and again after a fork: engines and sockets must not cross one)."""

from __future__ import annotations

import os
import threading

from celery import Celery

from service.core.broker import celery_publisher
from service.core.settings import Settings
from service.jobs.aftercommit import job_ends
from service.jobs.submit import Submitter, make_submitter
from service.ops import heartbeats, poolstate
from service.store.db import make_engine
from service.store.redisclient import redis_client
from workers.batching import Runner
from workers.modelcore import ArtifactSource, ModelCache
from workers.webhooks import Deliverer

#: What this worker is (set at worker_init in the main process, inherited by the pool): its
#: pool processes count their work under its name.
identity: heartbeats.Identity | None = None


class WorkerRoot:
    """One process's engine, Redis client, publisher, job ends, runner; the deliverer and the
    schedules' submitter on first use."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings, self.pid = settings, os.getpid()
        # A pool process runs one batch at a time: a small pool is enough (SQLite has none).
        small = {} if settings.database_url.startswith("sqlite") else \
            {"pool_size": 2, "max_overflow": 2}
        self.engine = make_engine(settings.database_url, **small)
        self.redis = redis_client(settings.redis_url)
        self.publish = celery_publisher(app)
        tally = None if identity is None else heartbeats.Tally(self.redis, identity.name)
        self.activity = poolstate.Activity(self.redis, None if identity is None else identity.name)
        self.ends = job_ends(self.engine, self.redis, self.publish,
                             settings.webhook_max_inline_bytes, tally, settings.bulk_window)
        # Artifacts: the registered path, else this host's copy or the store (model_dir set).
        models = ModelCache(settings.model_cache_size,
                            ArtifactSource(self.engine, settings.model_dir).read)
        self.runner = Runner(self.engine, self.ends, models, settings.lease_seconds,
                             settings.max_attempts, settings.data_root,
                             None if identity is None else identity.name)
        self._lock = threading.Lock()
        self._deliverer: Deliverer | None = None
        self._submitter: Submitter | None = None

    @property
    def deliverer(self) -> Deliverer:
        """The webhook deliverer (thread pools share it: its engine and sender are safe)."""
        with self._lock:
            if self._deliverer is None:
                engine = make_engine(self.settings.database_url, **self.settings.pool_options())
                self._deliverer = Deliverer(engine, self.settings)
            return self._deliverer

    @property
    def submitter(self) -> Submitter:
        """The schedules' Submitter: admitted and charged like any upload."""
        with self._lock:
            if self._submitter is None:
                self._submitter = make_submitter(self.settings, self.engine, self.redis,
                                                 self.publish, ends=self.ends)
            return self._submitter

    def close(self) -> None:
        """Let go of connections (the main process, before its pool forks)."""
        self.engine.dispose()
        self.redis.close()


_root: WorkerRoot | None = None
_made = threading.Lock()


def root(settings: Settings, app: Celery) -> WorkerRoot:
    """This process's root, made on first use, and made again in a forked child (which
    starts with the models its parent loaded)."""
    global _root
    with _made:
        if _root is None or _root.pid != os.getpid():
            parent, _root = _root, WorkerRoot(settings, app)
            if parent is not None:
                _root.runner.adopt(parent.runner)
        return _root
