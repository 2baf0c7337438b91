"""The one way predq opens a Redis client: wake-ups, the prediction cache, heartbeats, the
revocation epoch, locks, dead letters. Every caller gets the same timeouts unless it says
otherwise, and how Redis is reached (one server, or a Sentinel group) is decided here once,
from `REDIS_URL` (service/core/redisurl.py)."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from service.core.redisurl import sentinels, tcp_keepalive

#: Seconds a command, and a connection attempt, may take before redis-py gives up: a dead
#: Redis is noticed in seconds, never waited on.
TIMEOUT = 2.0


def redis_client(url: str, timeout: float | None = TIMEOUT, **options: Any) -> redis.Redis:
    """A client for `url` (redis://host:port/db, rediss://, unix:///path, or a Sentinel group:
    redis+sentinel://...); `timeout` bounds a command and a connection attempt (None: a
    command may block, for pub/sub readers).

    Through Sentinel, each new connection asks a sentinel where the master is, and a
    connection to a master that was demoted (READONLY) is dropped: after a failover the next
    command, or the caller's next try, reaches the new master."""
    options.setdefault("socket_connect_timeout", TIMEOUT if timeout is None else timeout)
    # A pooled connection to a server that died (or was demoted) fails once, as a connection
    # error: the command goes again on a new connection - through Sentinel, to the new master.
    # A timeout is not retried: a partitioned server costs a caller one timeout, not two.
    options.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
    if not url.startswith("unix://"):
        for name, value in tcp_keepalive().items():
            options.setdefault(name, value)
    group = sentinels(url)
    if group is None:
        return redis.Redis.from_url(url, socket_timeout=timeout, **options)
    sentinel = Sentinel(list(group.hosts), sentinel_kwargs=group.sentinel_kwargs(),
                        socket_timeout=timeout, **options)
    return sentinel.master_for(group.service, db=group.db, password=group.password)
