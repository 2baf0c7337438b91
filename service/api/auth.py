"""Bearer API keys: every /v1 request names its tenant through its key, and needs its scope."""

from __future__ import annotations

from flask import g, request

from service.api import services
from service.core.errors import Unauthorized
from service.tenants.keys import Principal

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def current_principal() -> Principal:
    """The principal of the request's `Authorization: Bearer KEY`, or Unauthorized (once per
    request: the rate limiter asks first)."""
    found: Principal | None = g.get("principal")
    if found is None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("send an API key as 'Authorization: Bearer KEY'")
        found = services().keys.principal(key.strip())
        g.principal = found
    return found


def current_tenant(scope: str | None = None) -> str:
    """The tenant, once the key is shown to hold `scope`: by default `read` for GET and
    `submit` for anything that changes state; 403 without it."""
    found = current_principal()
    found.require(scope or ("read" if request.method in _READS else "submit"))
    return found.tenant
