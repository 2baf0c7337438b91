"""One error handler: every failure becomes `{"error": {"code", "message", "field"?}}`."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service.core.errors import PredqError

log = logging.getLogger(__name__)


def error_response(status: int, body: dict[str, object]) -> Response:
    response = jsonify({"error": body})
    response.status_code = status
    return response


def register(app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]

    @app.errorhandler(PredqError)
    def predq_error(exc: PredqError) -> Response:
        response = error_response(exc.status, exc.to_dict())
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if exc.status == 408:
            response.headers["Connection"] = "close"  # the rest of the body is not read
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> Response:
        from flask import request

        allowed = request.max_content_length or limit  # bulk uploads have their own limit
        return error_response(
            413,
            {"code": "payload_too_large", "message": f"request body exceeds {allowed} bytes"},
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, {"code": code, "message": exc.description})
        headers = dict(exc.get_headers())
        for name in ("Allow", "Retry-After"):
            if name in headers:
                response.headers[name] = headers[name]
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def database_down(exc: DBAPIError) -> Response:
        log.error("database error: %s", exc.orig)
        return error_response(
            503, {"code": "unavailable", "message": "the result store is unavailable; retry"}
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, {"code": "internal_error", "message": "internal error"})
