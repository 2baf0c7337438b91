"""The command line's composition root: the settings, the store's engine and the Redis client
that `predq` subcommands act through (`predq up` starts processes that compose their own)."""

from __future__ import annotations

import redis as redis_lib
from sqlalchemy import Engine

from service.core.settings import Settings
from service.store.db import make_engine
from service.store.redisclient import redis_client


def settings() -> Settings:
    return Settings.from_env()


def engine(of: Settings | None = None) -> Engine:
    """An engine on the result store (a command runs a statement or a few, then exits)."""
    return make_engine((of or settings()).database_url)


def redis(of: Settings | None = None, timeout: float = 5.0) -> redis_lib.Redis:
    return redis_client((of or settings()).redis_url, timeout=timeout)
