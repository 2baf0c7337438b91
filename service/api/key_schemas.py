"""Request and response shapes of /v1/keys, for the OpenAPI description."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from service.api.schemas import Strict

Scope = Literal["submit", "read", "admin"]  # what a key made over HTTP may have
AnyScope = Literal["submit", "read", "admin", "operator"]  # operator: the command line's


class KeyCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "dashboard (read only)", "scopes": ["read"], "expires_in": 7776000}]})

    name: str | None = Field(None, max_length=100, pattern="^[^\x00-\x1f\x7f-\x9f]*$",
                             description="what the key is for (no control characters)")
    scopes: list[Scope] = Field(["submit", "read"], min_length=1)
    expires_in: float | None = Field(None, ge=1, le=3 * 365 * 86400,
                                     description="seconds from now until the key stops working")


class KeyInfo(Strict):
    prefix: str = Field(description="the key's first 10 characters: how to name it")
    tenant: str
    name: str | None
    scopes: list[AnyScope]
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyInfo):
    key: str = Field(description="the key itself: shown this once, only its hash is kept")


class KeyList(Strict):
    keys: list[KeyInfo]
