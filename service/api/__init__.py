"""The Flask app factory: HTTP in, domain calls, HTTP out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, current_app
from sqlalchemy import Engine

from service.api.lookups import KeyLookup, ModelLookup
from service.api.slowbody import SlowBodyGuard
from service.core.broker import celery_publisher, make_producer
from service.core.messaging import Publisher
from service.core.settings import Settings
from service.jobs.admission import QueueGauge
from service.jobs.committer import GroupCommitter
from service.jobs.submit import Submitter, make_submitter
from service.jobs.wakeups import ResultWaiter
from service.store.db import make_engine, reader
from service.tenants.limits import Limits, Quotas, TenantLimits
from service.webhooks.endpoints import Sealer
from service.webhooks.safety import AllowList


@dataclass
class Services:
    """What the views need, built once per app from the settings."""

    settings: Settings
    engine: Engine
    reads: Engine  # the same pool in autocommit, for single-statement reads
    submitter: Submitter  # the one way jobs come in
    models: ModelLookup
    keys: KeyLookup
    redis: redis.Redis
    gauge: QueueGauge  # queue depths, for 429s and health
    waiter: ResultWaiter  # wake-ups for synchronous predict
    sealer: Sealer  # webhook signing secrets at rest
    webhook_allow: AllowList  # non-public webhook targets the operator allows
    publish: Publisher  # ids to a queue; fails fast when Redis is down


def create_app(config: Mapping[str, Any] | Settings | None = None) -> Flask:
    """Build the app from environment settings, overridden by `config` (used by tests)."""
    from service.api import (
        apidocs,
        dashboard,
        errors,
        headers,
        health,
        jobs,
        keys,
        metrics,
        models,
        openapi,
        webhooks,
    )
    from service.api import quotas as rate_hooks

    settings = config if isinstance(config, Settings) else Settings.from_env(**dict(config or {}))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.wsgi_app = SlowBodyGuard(  # type: ignore[method-assign]
        app.wsgi_app, settings.api_read_timeout, settings.api_body_timeout)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(settings.database_url, **settings.pool_options())
    # Publishing fails fast when Redis is down: the rows are committed, the reconciler re-sends.
    publish = celery_publisher(make_producer(settings))
    committer = GroupCommitter(engine, publish, settings.submit_group_max, settings.submit_linger)
    reads = reader(engine)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    errors.register(app)
    headers.register(app)
    _request_ids(app)  # before the rate limit's hook: a 429 carries its request id too
    default_limits = Limits(settings.rate_limit_rps, settings.rate_limit_rows_per_minute)
    quotas = Quotas(settings.redis_url, TenantLimits(reads, default_limits))
    rate_hooks.register(app, quotas)
    submitter = make_submitter(settings, engine, client, publish, committer, quotas)
    app.extensions["predq"] = Services(
        settings, engine, reads, submitter, ModelLookup(reads),
        KeyLookup(reads, client, settings.key_epoch_check_interval), client, submitter.gauge,
        ResultWaiter(settings.redis_url), Sealer(settings.secret_key),
        AllowList.parse(settings.webhook_allow_hosts), publish,
    )
    logging.getLogger("service").setLevel(settings.log_level)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(apidocs.bp)
    openapi.register(app)
    metrics.register(app)  # GET /metrics and the HTTP request metrics
    return app


def _request_ids(app: Flask) -> None:
    """Every request gets an id (the caller's X-Request-ID, or a new one), answered in the
    same header and attached to every log line and job it produces."""
    from flask import Response, g, request

    from service.ops import logs

    @app.before_request
    def assign() -> None:
        g.request_id = logs.new_request_id(request.headers.get("X-Request-ID"))
        g.request_id_token = logs.request_id.set(g.request_id)

    @app.after_request
    def answer(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.teardown_request
    def forget(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            logs.request_id.reset(token)


def services() -> Services:
    return current_app.extensions["predq"]  # type: ignore[no-any-return]
