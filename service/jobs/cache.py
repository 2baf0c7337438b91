"""The prediction cache: single-row results of models that opted in (`--cache-ttl`), in Redis.
An optimisation, never the truth: a lost entry costs a prediction."""

from __future__ import annotations

import logging

import redis

from service.jobs.rowkey import row_digest
from service.models.modelinput import Batch
from service.models.registry import ModelInfo
from service.ops import metrics

log = logging.getLogger(__name__)


def cache_key(info: ModelInfo, rows: Batch, row: int = 0) -> str:
    """Model version, artifact sha256 and the exact bytes of one row (a numeric row's float64
    bytes; a typed row's canonical form, `rowkey`): a new version, or a re-registered
    artifact, never reads another's entries."""
    return f"predq:cache:{info.id}:{info.sha256}:{row_digest(rows, info.schema, row)}"


def cached_result(client: redis.Redis, info: ModelInfo, rows: Batch) -> str | None:
    """The stored result JSON of a single-row input of a cached model, if Redis has it."""
    if not info.cache_ttl or len(rows) != 1:
        return None
    try:
        value = client.get(cache_key(info, rows))
    except redis.RedisError as exc:
        log.warning("prediction cache unavailable: %s", exc)
        metrics.CACHE_REQUESTS.labels("error").inc()
        return None
    if not isinstance(value, bytes):
        metrics.CACHE_REQUESTS.labels("miss").inc()
        return None
    metrics.CACHE_REQUESTS.labels("hit").inc()
    return value.decode()
