"""API keys: shown once, stored as a sha256 hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import redis
from sqlalchemy import Connection, insert, select, update

from service.db import api_keys
from service.errors import InvalidInput, Unauthorized
from service.jobs import utcnow

KEY_PREFIX = "pq_"
#: Redis counter bumped after every revocation; API processes drop cached keys when it moves.
REVOCATION_EPOCH = "predq:keys:revocation-epoch"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: Connection, tenant: str) -> str:
    """Create a key for `tenant` and return it; only its hash is kept."""
    if not tenant or len(tenant) > 100 or not all(c.isalnum() or c in "-_." for c in tenant):
        raise InvalidInput("tenant", "use 1-100 letters, digits, '-', '_' or '.'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        insert(api_keys),
        {"tenant": tenant, "key_hash": hash_key(key), "prefix": key[:10], "created_at": utcnow()},
    )
    return key


def authenticate(conn: Connection, key: str) -> str:
    """Return the tenant of a live key, or raise Unauthorized."""
    digest = hash_key(key)
    row = conn.execute(
        select(api_keys.c.tenant, api_keys.c.key_hash, api_keys.c.revoked_at).where(
            api_keys.c.key_hash == digest
        )
    ).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
        raise Unauthorized("invalid or revoked API key")
    return str(row.tenant)


def revoke_key(conn: Connection, prefix: str) -> int:
    """Revoke every live key whose shown prefix matches; return how many."""
    stmt = (
        update(api_keys)
        .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return conn.execute(stmt).rowcount


def announce_revocation(client: redis.Redis) -> None:
    """Tell every API process to forget the keys it has cached (call after the commit)."""
    client.incr(REVOCATION_EPOCH)
