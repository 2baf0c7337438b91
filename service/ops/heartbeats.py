"""Worker heartbeats in Redis: each worker's main process beats; health counts the live ones."""

from __future__ import annotations

import time

import redis

WORKERS = "predq:workers"  # sorted set: worker name -> last heartbeat (unix time)
WORKER_TTL = 30.0


def heartbeat(client: redis.Redis, name: str) -> None:
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS, {name: now})
    pipe.zremrangebyscore(WORKERS, "-inf", now - WORKER_TTL)
    pipe.execute()


def live_workers(client: redis.Redis) -> int:
    return int(client.zcount(WORKERS, time.time() - WORKER_TTL, "+inf"))  # type: ignore[arg-type]
