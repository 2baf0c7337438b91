"""/v1/keys: a tenant's admins make, list and revoke the tenant's API keys."""

from __future__ import annotations

import contextlib
import math
from datetime import timedelta
from typing import Any

import redis
from flask import Blueprint, Response, jsonify

from service.api import key_schemas as K
from service.api import services
from service.api.auth import current_tenant
from service.api.openapi import documented
from service.api.submission import check_fields, json_body
from service.core.errors import InvalidInput, NotFound
from service.tenants import keys

bp = Blueprint("keys", __name__, url_prefix="/v1/keys")


@bp.get("")
@documented({200: (K.KeyList, "The keys, newest first")}, tags=["keys"])
def list_keys() -> Response:
    """List the tenant's API keys

    Every key of the caller's tenant, newest first: its prefix (how to name it), name,
    scopes and whether it is active, expired or revoked; never the keys themselves. Needs a
    key with the `admin` scope."""
    tenant = current_tenant("admin")
    with services().reads.connect() as conn:
        return jsonify({"keys": keys.list_keys(conn, tenant)})


@bp.post("")
@documented({201: (K.KeyCreated, "The key (shown once) and what it may do")},
            (400, 408, 413, 415), json=K.KeyCreate, tags=["keys"])
def create_key() -> tuple[Response, int]:
    """Make an API key

    A new key for the caller's tenant, with the scopes asked for (default `submit` and
    `read`) and an optional expiry, for instance a read-only key for a dashboard or a
    short-lived one for a batch run. The key is shown this once; only its hash is kept.
    Needs a key with the `admin` scope, which may hand out any scope but `operator` (the
    command line's alone: `predq keys create --tenant ops --scopes operator`)."""
    tenant = current_tenant("admin")
    body = json_body()
    check_fields(body, {"name", "scopes", "expires_in"})
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput("name", "must be a string")
    scopes = keys.parse_scopes(_scopes(body.get("scopes", list(keys.DEFAULT_SCOPES))))
    granted = sorted(keys.CLI_ONLY_SCOPES & set(scopes))
    if granted:
        raise InvalidInput("scopes", f"the {granted[0]!r} scope is granted only from the "
                                     "command line: predq keys create --scopes operator")
    expires_at = None
    if body.get("expires_in") is not None:
        expires_at = keys.utcnow() + timedelta(seconds=_seconds(body["expires_in"]))
    with services().engine.begin() as conn:
        key = keys.create_key(conn, tenant, scopes, expires_at, name)
        info = next(k for k in keys.list_keys(conn, tenant) if k["prefix"] == key[:10])
    return jsonify({**info, "key": key}), 201


@bp.delete("/<prefix>")
@documented({200: (K.KeyInfo, "The key, now `revoked`")},
            ((404, "`not_found`: no active key of the tenant has this prefix"),), tags=["keys"])
def revoke(prefix: str) -> Response:
    """Revoke an API key

    The key named by its prefix stops working on every API process: the answer comes once
    each has read the revocation (within `PREDQ_KEY_EPOCH_CHECK_INTERVAL`, 0.1 s). Needs a
    key with the `admin` scope; a key of another tenant, or one already revoked, answers
    404."""
    tenant = current_tenant("admin")
    svc = services()
    if not keys.is_prefix(prefix):
        raise NotFound(f"no active key {prefix[:20]!r}")
    with svc.engine.begin() as conn:
        if not keys.revoke_key(conn, prefix, tenant):
            raise NotFound(f"no active key {prefix[:20]!r}")
        info = next(k for k in keys.list_keys(conn, tenant) if k["prefix"] == prefix)
    # API processes that cannot read the epoch ask SQL on every request anyway.
    with contextlib.suppress(redis.RedisError):
        keys.announce_revocation(svc.redis, svc.settings.key_epoch_check_interval)
    return jsonify(info)


def _scopes(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise InvalidInput("scopes", "a list of scope names, e.g. [\"read\"]")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("expires_in", "seconds from now, a number")
    if not 1 <= value <= 3 * 365 * 86400:
        raise InvalidInput("expires_in", "at least 1 second and at most 3 years")
    return float(value)
