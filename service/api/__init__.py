"""The Flask app factory: HTTP in, domain calls, HTTP out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from service.api.slowbody import SlowBodyGuard
from service.core.settings import Settings

if TYPE_CHECKING:
    from service.api.composition import Services


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
        operations,
        rollouts,
        webhooks,
    )
    from service.api import quotas as rate_hooks
    from service.api.composition import compose

    settings = config if isinstance(config, Settings) else Settings.from_env(**dict(config or {}))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.wsgi_app = SlowBodyGuard(  # type: ignore[method-assign]
        app.wsgi_app, settings.api_read_timeout, settings.api_body_timeout)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    built = compose(settings)
    errors.register(app)
    headers.register(app)
    _request_ids(app)  # before the rate limit's hook: a 429 carries its request id too
    rate_hooks.register(app, built.quotas)
    app.extensions["predq"] = built
    logging.getLogger("service").setLevel(settings.log_level)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(rollouts.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(operations.bp)
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

