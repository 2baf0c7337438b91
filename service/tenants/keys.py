"""API keys: shown once, stored as a sha256 hash, compared in constant time; each key carries
scopes and may expire."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Connection, insert, select, update

from service.core.errors import InvalidInput, PredqError, Unauthorized
from service.core.times import as_utc, iso, utcnow
from service.store.db import api_keys

KEY_PREFIX = "pq_"
#: Control characters and lone surrogates: never stored (PostgreSQL refuses NUL, and
#: a surrogate cannot be encoded).
NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: Redis counter bumped after every revocation; API processes drop cached keys when it moves.
REVOCATION_EPOCH = "predq:keys:revocation-epoch"
#: read: GET anything of the tenant's; submit: jobs, predictions, cancels, webhook settings;
#: admin: API keys (and model registration, which is also the operator's `predq models add`);
#: operator: what is shared by every tenant (a model's rollout, its comparison, shadow results),
#: granted only from the command line (`predq keys create --scopes operator`), never over HTTP.
SCOPES = ("submit", "read", "admin", "operator")
DEFAULT_SCOPES = ("submit", "read")
#: Scopes only the command line grants: a tenant's admin cannot hand them out.
CLI_ONLY_SCOPES = frozenset({"operator"})


class Forbidden(PredqError):
    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    """Who a live key speaks for, and what it may do."""

    tenant: str
    prefix: str
    scopes: frozenset[str]
    expires_at: datetime | None
    name: str | None = None  # what the key is for, if its creator said

    @property
    def who(self) -> str:
        """The key as a job's record names it (who cancelled): its prefix, and its name."""
        return f"key {self.prefix}" + (f" ({self.name})" if self.name else "")

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope (it has: "
                            f"{', '.join(sorted(self.scopes))})")


def is_prefix(text: str) -> bool:
    """The shape of a key's shown prefix: `pq_` and 7 URL-safe characters."""
    return len(text) == 10 and text.startswith(KEY_PREFIX) and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in text[3:])


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`submit,read` or a list of names: known scopes only, at least one."""
    names = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(n, str) for n in names):
        raise InvalidInput("scopes", f"a list of scope names: {', '.join(SCOPES)}")
    scopes = [n.strip() for n in names if n.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput("scopes", f"use one or more of {', '.join(SCOPES)}"
                           + (f"; unknown: {unknown[0][:40]!r}" if unknown else ""))
    return tuple(s for s in SCOPES if s in scopes)


def create_key(conn: Connection, tenant: str, scopes: tuple[str, ...] = DEFAULT_SCOPES,
               expires_at: datetime | None = None, name: str | None = None) -> str:
    """Create a key for `tenant` and return it; only its hash is kept."""
    if not tenant or len(tenant) > 100 or not all(c.isalnum() or c in "-_." for c in tenant):
        raise InvalidInput("tenant", "use 1-100 letters, digits, '-', '_' or '.'")
    if name is not None and (len(name) > 100 or NOT_TEXT.search(name)):
        raise InvalidInput("name", "at most 100 characters, no control characters")
    if expires_at is not None and as_utc(expires_at) <= utcnow():
        raise InvalidInput("expires_at", "is in the past")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(insert(api_keys), {
        "tenant": tenant, "key_hash": hash_key(key), "prefix": key[:10], "created_at": utcnow(),
        "scopes": ",".join(parse_scopes(scopes)), "expires_at": expires_at, "name": name,
    })
    return key


def principal(conn: Connection, key: str) -> Principal:
    """The principal of a live (known, unrevoked, unexpired) key, or raise Unauthorized."""
    digest = hash_key(key)
    row = conn.execute(
        select(api_keys.c.tenant, api_keys.c.key_hash, api_keys.c.revoked_at, api_keys.c.prefix,
               api_keys.c.scopes, api_keys.c.expires_at, api_keys.c.name)
        .where(api_keys.c.key_hash == digest)
    ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
        raise Unauthorized("invalid or revoked API key")
    found = Principal(str(row.tenant), str(row.prefix), frozenset(row.scopes.split(",")),
                      as_utc(row.expires_at) if row.expires_at else None, row.name)
    if found.expired():
        raise Unauthorized("this API key has expired")
    return found


def authenticate(conn: Connection, key: str) -> str:
    """Return the tenant of a live key, or raise Unauthorized."""
    return principal(conn, key).tenant


def list_keys(conn: Connection, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every key (of `tenant`, or all), newest first, without anything secret."""
    stmt = select(api_keys).order_by(api_keys.c.id.desc())
    if tenant is not None:
        stmt = stmt.where(api_keys.c.tenant == tenant)
    now = utcnow()
    out = []
    for row in conn.execute(stmt).mappings():
        expires = as_utc(row["expires_at"]) if row["expires_at"] else None
        state = ("revoked" if row["revoked_at"] else
                 "expired" if expires is not None and expires <= now else "active")
        out.append({"prefix": row["prefix"], "tenant": row["tenant"], "name": row["name"],
                    "scopes": row["scopes"].split(","), "status": state,
                    "created_at": iso(row["created_at"]), "expires_at": iso(expires),
                    "revoked_at": iso(row["revoked_at"])})
    return out


def revoke_key(conn: Connection, prefix: str, tenant: str | None = None) -> int:
    """Revoke every live key whose shown prefix matches (within `tenant` if given); return how
    many."""
    stmt = (
        update(api_keys)
        .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if tenant is not None:
        stmt = stmt.where(api_keys.c.tenant == tenant)
    return conn.execute(stmt).rowcount


def announce_revocation(client: redis.Redis, settle: float = 0.0) -> None:
    """Tell every API process to forget the keys it has cached (call after the commit), then
    wait `settle` seconds: the key epoch check interval, within which every API process reads
    the epoch again (each trusts what it read for that long). Once this returns, no API
    process with that interval accepts a revoked key."""
    client.incr(REVOCATION_EPOCH)
    if settle > 0:
        time.sleep(settle)
