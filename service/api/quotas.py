"""Per-tenant request rates on every authenticated /v1 call (the counting is in
service/tenants/limits.py): one before_request hook, and the X-RateLimit-* headers after.

predq calls the limits strategy itself from this hook instead of flask-limiter's per-request
machinery, which resolved and parsed the limits on every request, limited tenant or not
(measured: ~20% of the API's CPU per job)."""

from __future__ import annotations

from flask import Flask, Response, g, request

from service.api.auth import current_principal
from service.tenants.limits import Quotas


def register(app: Flask, quotas: Quotas) -> None:
    @app.before_request
    def check_rate() -> None:
        if not request.path.startswith("/v1/"):
            return
        tenant = _tenant_or_nobody()  # authenticates once; the view reuses it
        if not tenant:
            return  # the view answers 401 (or 503)
        g.rate_headers, refused = quotas.take_request(tenant)
        if refused is not None:
            raise refused

    @app.after_request
    def rate_headers(response: Response) -> Response:
        headers = g.get("rate_headers")
        if headers:
            response.headers.update(headers)
        return response


def _tenant_or_nobody() -> str:
    """The tenant of the request's key; a request without a valid key is not counted here and
    is answered 401 by its view."""
    try:
        return current_principal().tenant
    except Exception:  # noqa: BLE001 - the view raises it again and answers 401 or 503
        return ""
