"""Dead letters: broker messages a worker will not run, kept in Redis for an operator to read.

The broker is a trust boundary. Celery logs and drops a message it cannot decode or must not
(pickle, yaml), and for some shapes of body it fails deep in a strategy, or in celery-batches'
flush, which stops the worker; the message, never acknowledged, goes back to its queue for the
next worker.
`DeadLetteringConsumer` checks each task message's shape before its strategy sees it, and keeps
every refused message (`predq:dead-letters`, newest first, capped), logs one line, and
acknowledges it. A valid message pays a few type tests on the body its strategy decodes anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu.message import Message

from service.core.messaging import (
    CHUNK_TASK,
    DELIVER_TASK,
    PREDICT_TASK,
    RECONCILE_TASK,
    SCHEDULE_TASK,
    SHADOW_TASK,
)
from service.store.redisclient import redis_client

log = logging.getLogger(__name__)
DEAD_LETTERS = "predq:dead-letters"
KEEP = 1000  # entries; the oldest are dropped
CLIP = 4096  # characters kept of a body, or of its headers
Accepts = Callable[[list[Any], dict[str, Any]], bool]


def record(client: redis.Redis, entry: dict[str, Any], keep: int = KEEP) -> None:
    """Add `entry` as the newest dead letter, dropping the oldest beyond `keep`."""
    with client.pipeline() as pipe:
        pipe.lpush(DEAD_LETTERS, json.dumps(entry))
        pipe.ltrim(DEAD_LETTERS, 0, keep - 1)
        pipe.execute()


def latest(client: redis.Redis, n: int) -> tuple[int, list[dict[str, Any]]]:
    """How many dead letters there are, and the newest `n`."""
    with client.pipeline() as pipe:
        pipe.llen(DEAD_LETTERS)
        pipe.lrange(DEAD_LETTERS, 0, n - 1)
        count, raw = pipe.execute()
    return count, [json.loads(item) for item in raw]


def purge(client: redis.Redis) -> int:
    """Delete every dead letter; return how many there were."""
    with client.pipeline() as pipe:
        pipe.llen(DEAD_LETTERS)
        pipe.delete(DEAD_LETTERS)
        count, _ = pipe.execute()
    return int(count)


def describe(message: Message, reason: str, worker: str) -> dict[str, Any]:
    """What an operator needs to judge a refused message; its body is kept, never decoded."""
    body = message.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    headers = message.headers
    text = json.dumps(headers, default=repr)
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "queue": (message.delivery_info or {}).get("routing_key"),
        "delivery_tag": message.delivery_tag,
        "reason": reason,
        "worker": worker,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": headers if len(text) <= CLIP else text[:CLIP],
        "body": body[:CLIP].decode("utf-8", "backslashreplace"),
        "body_bytes": len(body),
    }


def _ids_only(args: list[Any], kwargs: dict[str, Any]) -> bool:
    """`[ids]`: job ids for predict, webhook event ids for deliver."""
    if kwargs or len(args) != 1 or not isinstance(args[0], list):
        return False
    try:
        joined = "".join(args[0])  # one C loop: a TypeError unless every id is a string
    except TypeError:
        return False
    return "\x00" not in joined  # PostgreSQL refuses a NUL: every job of the batch would fail


#: The arguments each of our tasks takes; a message for one of them with others is refused.
ACCEPTS: dict[str, Accepts] = {
    PREDICT_TASK: _ids_only,
    CHUNK_TASK: _ids_only,
    DELIVER_TASK: _ids_only,
    SHADOW_TASK: _ids_only,
    RECONCILE_TASK: lambda args, kwargs: not args and not kwargs,
    SCHEDULE_TASK: lambda args, kwargs: (len(args) == 1 and isinstance(args[0], str)
                                         and not kwargs),
}


def check(message: Message, accepts: Accepts | None) -> None:
    """Raise InvalidTaskError unless `message` is a protocol-2 task message (body `[args,
    kwargs, embed]`, an id) whose arguments `accepts` takes; decoding raises ContentDisallowed
    or DecodeError. Celery's consumer turns each into a call to `on_invalid_task` or
    `on_decode_error`."""
    payload = message.payload  # decoded once: the strategy reads the same cached value
    if not isinstance(message.headers.get("id"), str):
        raise InvalidTaskError("no task id")
    limits = message.headers.get("timelimit")
    if limits and not (isinstance(limits, list) and len(limits) == 2
                       and all(t is None or isinstance(t, int | float) for t in limits)):
        raise InvalidTaskError(f"timelimit header {limits!r:.100} is not [hard, soft]")
    if not (isinstance(payload, list) and len(payload) == 3 and isinstance(payload[0], list)
            and isinstance(payload[1], dict) and isinstance(payload[2], dict | None)):
        raise InvalidTaskError(f"body {payload!r:.100} is not [args, kwargs, embed]")
    if accepts is not None and not accepts(payload[0], payload[1]):
        raise InvalidTaskError(f"arguments {payload[0]!r:.200} {payload[1]!r:.100} "
                               "do not fit the task")


def _checked(strategy: Callable[..., Any], accepts: Accepts | None) -> Callable[..., Any]:
    def on_message(message: Message, *args: Any, **kwargs: Any) -> Any:
        check(message, accepts)
        return strategy(message, *args, **kwargs)
    return on_message


class DeadLetteringConsumer(Consumer):
    """Celery's consumer (`worker_consumer`), except that a message it will not run is kept,
    logged once and acknowledged, and that task messages are checked before their strategy.

    Celery's own handlers log the body and drop the message; for an unknown task they also
    record a failure in the result backend, which predq does not use."""

    _dead_letters: redis.Redis | None = None

    def update_strategies(self) -> None:
        super().update_strategies()  # at every (re)start: fresh strategies, wrapped once
        for name, strategy in self.strategies.items():
            self.strategies[name] = _checked(strategy, ACCEPTS.get(name))

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._dead_letter(message, f"cannot decode the body: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._dead_letter(message, "not a task message: no task name")

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._dead_letter(message, f"unknown task {message.headers.get('task')!r:.100}")

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {type(exc).__name__}: {exc}")

    def _dead_letter(self, message: Message, reason: str) -> None:
        entry = describe(message, reason[:500], self.hostname)
        kept = ""
        try:
            if self._dead_letters is None:
                settings = self.app.conf.predq_settings
                self._dead_letters = redis_client(settings.redis_url)
            record(self._dead_letters, entry)
        except redis.RedisError as exc:  # this line is then the only trace
            kept = f" (not kept: {exc})"
        log.error("dead letter from queue %s, delivery tag %s: %s%s", entry["queue"],
                  entry["delivery_tag"], entry["reason"], kept,
                  extra={"queue": entry["queue"], "delivery_tag": entry["delivery_tag"],
                         "reason": entry["reason"]})
        message.ack_log_error(log, self.connection_errors)
