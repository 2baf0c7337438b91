"""Per-process lookups that every request needs, at one round trip or less."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import redis
from sqlalchemy import Engine

from service.tenants import keys


class KeyLookup:
    """Principal (tenant, scopes, expiry) by API key. Valid keys are cached per process, tagged
    with the Redis revocation epoch, which is re-read at most every `check_interval` seconds: a
    revocation bumps the epoch and every process drops its cached keys within that interval.
    Expiry is checked on every request. Without Redis, every request asks SQL. Entries also
    expire after `ttl` seconds."""

    def __init__(self, engine: Engine, client: redis.Redis, check_interval: float = 0.1,
                 ttl: float = 60.0, size: int = 10_000) -> None:
        self._engine = engine
        self._redis = client
        self._check_interval = check_interval
        self._ttl = ttl
        self._size = size
        self._cache: OrderedDict[str, tuple[keys.Principal, bytes, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch_value: bytes | None = None
        self._epoch_read_at = -1e9

    def principal(self, key: str) -> keys.Principal:
        """The key's tenant and scopes; Unauthorized for an unknown, revoked or expired key."""
        digest = keys.hash_key(key)
        epoch = self._epoch()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and epoch is not None and hit[1] == epoch and now - hit[2] < self._ttl:
            if hit[0].expired():  # expiry needs no announcement: the cached time says it
                raise keys.Unauthorized("this API key has expired")
            return hit[0]
        with self._engine.connect() as conn:
            found = keys.principal(conn, key)  # raises Unauthorized; failures not cached
        if epoch is not None:
            with self._lock:
                self._cache[digest] = (found, epoch, now)
                self._cache.move_to_end(digest)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return found

    def tenant(self, key: str) -> str:
        return self.principal(key).tenant

    def _epoch(self) -> bytes | None:
        now = time.monotonic()
        if now - self._epoch_read_at < self._check_interval:
            return self._epoch_value
        self._epoch_read_at = now  # one request reads it; the others use the last until it has
        try:
            value = self._redis.get(keys.REVOCATION_EPOCH)
            epoch = value if isinstance(value, bytes) else b"0"
        except redis.RedisError:
            epoch = None
        self._epoch_value, self._epoch_read_at = epoch, now
        return epoch
