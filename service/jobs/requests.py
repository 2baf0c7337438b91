"""A job request, assembled once: the JSON endpoint, a bulk upload's query string, synchronous
predict and the schedules all hand their options to `RequestBuilder.build`, which resolves
the model, picks the queue and checks every option the same way (each error names its field).

It also gives the job its id, and so decides its version once: a job that names none follows
its model's rollout (`service/models/rollouts.py`), chosen by a hash of (tenant,
Idempotency-Key) or of that id, and may be given a shadow version to run on as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from service.core.errors import InvalidInput
from service.core.messaging import NORMAL
from service.jobs import idempotency, options, priorities
from service.models.lookup import ModelLookup
from service.models.registry import ModelInfo
from service.models.rollouts import seed_of
from service.webhooks.safety import AllowList

#: Options a JSON job may carry beside its rows (`inputs`, or `input`/`output` by reference).
JSON_OPTIONS = frozenset({"model", "version", "priority", "deadline", "webhook_url",
                          "retention"})
#: Options a bulk body takes in the query string (the body holds only rows).
QUERY_OPTIONS = frozenset({*JSON_OPTIONS, "keep_inputs"})


@dataclass(frozen=True)
class JobRequest:
    """What a client asked for, checked: the model, the queue, and the job's options."""

    tenant: str
    model: ModelInfo
    queue: str = NORMAL
    deadline: datetime | None = None
    webhook_url: str | None = None
    retention: int | None = None  # seconds kept once final; None: the tenant's or default
    keep_inputs: bool = False  # bulk jobs: keep the input chunks once final
    request_id: str | None = None  # the HTTP request that submitted it
    key: str | None = None  # its Idempotency-Key
    input_format: str | None = None  # a bulk upload's format (formats.Format.name)
    retry_of: str | None = None  # the job this one retries (POST /v1/jobs/{id}/retry)
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # the job it makes
    shadow: ModelInfo | None = None  # the rollout's shadow version it also runs on


@dataclass(frozen=True)
class Options:
    """A job's options as given, not yet checked: JSON values, or query-string text turned
    into the same (`from_query`)."""

    model: str
    version: str | None = None
    priority: Any = None  # None: the entry point's default
    deadline: Any = None  # seconds from now, or an ISO 8601 time with a timezone
    webhook_url: Any = None
    retention: Any = None
    keep_inputs: bool = False
    key: str | None = None  # the Idempotency-Key header

    @classmethod
    def from_json(cls, body: Mapping[str, Any], key: str | None) -> Options:
        """The options of a JSON body (its other fields, the rows, are the caller's)."""
        version = body.get("version")
        if version is not None and (isinstance(version, bool)
                                    or not isinstance(version, str | int)):
            raise InvalidInput("version", "must be a string")
        return cls(_model(body.get("model")), None if version is None else str(version),
                   body.get("priority"), body.get("deadline"), body.get("webhook_url"),
                   body.get("retention"), key=key)

    @classmethod
    def from_query(cls, args: Mapping[str, str], key: str | None) -> Options:
        """The options of a bulk body, from the query string (`?model=iris&priority=bulk`)."""
        unknown = sorted(set(args) - QUERY_OPTIONS)
        if unknown:
            raise InvalidInput(unknown[0][:100], "unknown query parameter")
        if not args.get("model"):
            raise InvalidInput("model", "required: ?model=NAME (the body holds only the rows)")
        priority = args.get("priority")
        return cls(args["model"], args.get("version"),
                   int(priority) if priority is not None and priority.isdigit() else priority,
                   _number_or_text(args.get("deadline")), args.get("webhook_url"),
                   args.get("retention"), _flag(args.get("keep_inputs"), "keep_inputs"), key)


class RequestBuilder:
    """Builds checked JobRequests for one process: how it resolves models (a cache in the
    API), where it reads a tenant's webhook secret, and which private webhook hosts the
    operator allows."""

    def __init__(self, models: ModelLookup, reads: Engine, webhook_allow: AllowList) -> None:
        self.models = models
        self.resolve = models.resolve
        self.reads = reads
        self.webhook_allow = webhook_allow

    def build(self, tenant: str, given: Options, default_priority: str = "normal",
              request_id: str | None = None) -> JobRequest:
        """The request `given` makes for `tenant`, every option checked, and its job's id and
        version chosen."""
        key = None if given.key is None else idempotency.check_key(given.key)
        job_id = str(uuid.uuid4())
        routed = self.models.route(given.model, given.version, seed_of(tenant, key, job_id))
        priority = default_priority if given.priority is None else given.priority
        return JobRequest(
            tenant, routed.model, priorities.queue_for(priority),
            deadline=options.parse_deadline(given.deadline),
            webhook_url=options.check_webhook_url(self.reads, self.webhook_allow, tenant,
                                                  given.webhook_url),
            retention=options.parse_retention(given.retention),
            keep_inputs=given.keep_inputs, request_id=request_id, key=key, job_id=job_id,
            shadow=routed.shadow)


def _model(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput("model", "required: the name of a registered model")
    return value


def _number_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _flag(value: str | None, field: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InvalidInput(field, "true or false")
