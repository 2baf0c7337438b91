"""A bulk job keeps two chunk messages out for every pool process of the workers that read
its queue (from their heartbeats), at least PREDQ_BULK_WINDOW."""

from __future__ import annotations

import os

import redis
from sqlalchemy import Engine

from service.core.settings import Settings
from service.jobs.submit import make_submitter
from service.ops import heartbeats


def test_the_window_grows_with_the_pool_processes_reading_the_queue(
    settings: Settings, engine: Engine
) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    queue = f"predict.window-test-{os.getpid()}"
    names = []
    try:
        assert make_submitter(settings, engine, client, None).window(queue) == \
            settings.bulk_window  # no worker reads it
        for pid, procs in ((1, 6), (2, 3)):
            identity = heartbeats.Identity("host-a", pid, queues=(queue,), concurrency=procs)
            heartbeats.heartbeat(client, identity.name, identity)
            names.append(identity.name)
        other = heartbeats.Identity("host-b", 3, queues=("predict.elsewhere",), concurrency=50)
        heartbeats.heartbeat(client, other.name, other)
        names.append(other.name)
        assert make_submitter(settings, engine, client, None).window(queue) == 18
        small = make_submitter(settings.replace(bulk_window=40), engine, client, None)
        assert small.window(queue) == 40
    finally:
        for name in names:
            heartbeats.forget(client, name)
        client.close()
