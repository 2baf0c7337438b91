"""Bearer API keys: every /v1 request names its tenant through its key."""

from __future__ import annotations

from flask import request

from service.api import services
from service.errors import Unauthorized


def current_tenant() -> str:
    """The tenant of the request's `Authorization: Bearer KEY`, or Unauthorized."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send an API key as 'Authorization: Bearer KEY'")
    return services().keys.tenant(key.strip())
