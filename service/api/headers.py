"""Security headers on every answer. The dashboard keeps its key in localStorage, so no script
but its own file may run on the site's pages, and no other site may frame them."""

from __future__ import annotations

from flask import Flask, Response

POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",  # /static/dashboard.js, /docs' Swagger UI; no inline script
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def register(app: Flask) -> None:
    @app.after_request
    def secure(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
