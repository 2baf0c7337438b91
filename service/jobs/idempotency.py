"""Idempotency keys (as Stripe defines them): the same key and the same request from the same
tenant get the job the first attempt created; the same key with a different request is an
error. The key is recorded in the job's own transaction, so a job and its key commit together
or not at all, and of concurrent attempts with one key exactly one inserts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from service.core.errors import InvalidInput, PredqError, TransientError
from service.store.db import idempotency_keys

HEADER = "Idempotency-Key"
#: Keys are kept at least this long (the retention sweep deletes older ones).
KEEP = timedelta(hours=24)


class KeyReused(PredqError):
    """The key was used for a different request."""

    status = 422
    code = "idempotency_key_reused"

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(f"Idempotency-Key {key[:80]!r} was used for a different request "
                         f"(job {job_id}); use a new key for a new request", field=HEADER)
        self.job_id = job_id

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "job_id": self.job_id}


@dataclass(frozen=True)
class Claim:
    """An idempotency key a new job asks to take."""

    key: str
    fingerprint: str


def check_key(value: str) -> str:
    if not 1 <= len(value) <= 255 or not value.isprintable() or not value.isascii():
        raise InvalidInput(HEADER, "1 to 255 printable ASCII characters, e.g. a UUID")
    return value


def fingerprint(*parts: Any) -> str:
    """sha256 of what a request asks for, insensitive to JSON key order and spacing."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find(conn: Connection, tenant: str, key: str) -> tuple[str, str] | None:
    """(job id, fingerprint) recorded for the key, or None."""
    row = conn.execute(
        select(idempotency_keys.c.job_id, idempotency_keys.c.fingerprint).where(
            idempotency_keys.c.tenant == tenant, idempotency_keys.c.key == key)).first()
    return None if row is None else (str(row.job_id), str(row.fingerprint))


def take(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert key rows unless their (tenant, key) exists; return the job ids whose key went in.
    ON CONFLICT DO NOTHING: concurrent attempts never fail their whole group, the losers
    simply learn that another job holds the key."""
    if not rows:
        return set()
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (dialect.insert(idempotency_keys).values(rows)
            .on_conflict_do_nothing(index_elements=["tenant", "key"])
            .returning(idempotency_keys.c.job_id))
    return set(conn.execute(stmt).scalars())


def replay(found: tuple[str, str], key: str, wanted: str) -> str:
    """The original job's id if the request is the same, else KeyReused."""
    job_id, recorded = found
    if recorded != wanted:
        raise KeyReused(key, job_id)
    return job_id


def after_race(conn: Connection, tenant: str, key: str, wanted: str) -> str:
    """The job of the concurrent request that took `key` first (this one's insert found it
    taken), or KeyReused; if that request rolled back after all, the client retries."""
    found = find(conn, tenant, key)
    if found is None:
        raise TransientError("a concurrent request with this Idempotency-Key failed; retry")
    return replay(found, key, wanted)


def purge(conn: Connection, older_than: Any) -> int:
    return conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)).rowcount
