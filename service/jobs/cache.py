"""The prediction cache: single-row results of models that opted in (`--cache-ttl`), in Redis.
An optimisation, never the truth: a lost entry costs a prediction."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import redis

from service.models.registry import ModelInfo
from service.ops import metrics

log = logging.getLogger(__name__)


def cache_key(info: ModelInfo, row: np.ndarray) -> str:
    """Model version, artifact sha256 and the exact float64 bytes of the row: a new version,
    or a re-registered artifact, never reads another's entries."""
    digest = hashlib.blake2b(np.ascontiguousarray(row, dtype="<f8").tobytes(), digest_size=16)
    return f"predq:cache:{info.id}:{info.sha256}:{digest.hexdigest()}"


def cached_result(client: redis.Redis, info: ModelInfo, rows: np.ndarray) -> str | None:
    """The stored result JSON of a single-row input of a cached model, if Redis has it."""
    if not info.cache_ttl or len(rows) != 1:
        return None
    try:
        value = client.get(cache_key(info, rows[0]))
    except redis.RedisError as exc:
        log.warning("prediction cache unavailable: %s", exc)
        metrics.CACHE_REQUESTS.labels("error").inc()
        return None
    if not isinstance(value, bytes):
        metrics.CACHE_REQUESTS.labels("miss").inc()
        return None
    metrics.CACHE_REQUESTS.labels("hit").inc()
    return value.decode()
