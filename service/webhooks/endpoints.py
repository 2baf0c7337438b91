"""Webhook endpoints of a tenant and their signing secrets (Standard Webhooks `whsec_...`).

A secret is shown once, when it is made; the database keeps it sealed with the operator's
PREDQ_SECRET_KEY (Fernet), since the workers need it back to sign. Rotating keeps the previous
secret signing beside the new one for a grace period, so receivers can switch without a gap.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Connection, delete, func, insert, select, text, update

from service.core.errors import InvalidInput, NotFound, PredqError
from service.core.times import as_utc, iso, utcnow
from service.store.db import webhook_endpoints, webhook_events

EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled", "job.expired")
#: What `create` names an endpoint: `we_` and a uuid4 in hex.
ID_PATTERN = "we_[0-9a-f]{32}"


class NotConfigured(PredqError):
    status = 503
    code = "not_configured"


class TooManyEndpoints(PredqError):
    """The tenant has as many endpoints as the operator allows (PREDQ_WEBHOOK_MAX_ENDPOINTS)."""

    status = 409
    code = "too_many_endpoints"

    def __init__(self, limit: int) -> None:
        super().__init__(f"this tenant has {limit} webhook endpoints, the most allowed: delete "
                         "one first (or ask the operator to raise PREDQ_WEBHOOK_MAX_ENDPOINTS)",
                         field="url")
        self.limit = limit


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint {endpoint_id!r} not found")


class Sealer:
    """Seals secrets at rest with the operator's key."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            raise NotConfigured("webhooks need PREDQ_SECRET_KEY (a Fernet key) to keep their "
                                "signing secrets; ask the operator to set it")
        return self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, sealed: str) -> str:
        if self._fernet is None:
            raise NotConfigured("PREDQ_SECRET_KEY is not set: webhook secrets cannot be read")
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise NotConfigured("a webhook secret does not open with PREDQ_SECRET_KEY "
                                "(was the key changed?)") from exc


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class Endpoint:
    id: str
    tenant: str
    url: str | None
    events: list[str]
    secret: str  # sealed
    previous_secret: str | None
    previous_until: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": self.events or list(EVENT_TYPES),
                "disabled": self.disabled_at is not None, "disabled_reason": self.disabled_reason,
                "created_at": iso(self.created_at)}

    def wants(self, event_type: str) -> bool:
        return self.url is not None and self.disabled_at is None and (
            not self.events or event_type in self.events)

    def signing_secrets(self, sealer: Sealer, now: datetime) -> list[str]:
        out = [sealer.unseal(self.secret)]
        until = self.previous_until
        if self.previous_secret and until is not None and as_utc(until) > now:
            out.append(sealer.unseal(self.previous_secret))
        return out


def check_events(events: Any) -> list[str]:
    if events is None:
        return []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise InvalidInput("events", f"a list of event types: {', '.join(EVENT_TYPES)}")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput("events", f"unknown event type {unknown[0]!r}; "
                                     f"known: {', '.join(EVENT_TYPES)}")
    return sorted(set(events))


def create(conn: Connection, sealer: Sealer, tenant: str, url: str | None,
           events: list[str], limit: int | None = None) -> tuple[Endpoint, str]:
    """A new endpoint (url None: the tenant's secret for jobs' own webhook_url) and its secret,
    which is shown only now; TooManyEndpoints if the tenant would have more than `limit`
    endpoints with a URL (the caller's transaction is then rolled back)."""
    secret = new_secret()
    row = {"id": f"we_{uuid.uuid4().hex}", "tenant": tenant, "url": url, "events": events,
           "secret": sealer.seal(secret), "created_at": utcnow()}
    if limit is not None and url is not None:
        _lock_tenant(conn, tenant)
    conn.execute(insert(webhook_endpoints), row)
    if limit is not None and url is not None and count(conn, tenant) > limit:
        raise TooManyEndpoints(limit)
    return get(conn, tenant, str(row["id"])), secret


def count(conn: Connection, tenant: str) -> int:
    """The tenant's endpoints with a URL (its job secret is not one)."""
    return int(conn.execute(select(func.count()).select_from(webhook_endpoints).where(
        webhook_endpoints.c.tenant == tenant, webhook_endpoints.c.url.is_not(None))).scalar_one())


def _lock_tenant(conn: Connection, tenant: str) -> None:
    """Serialize the tenant's registrations, so that two at once cannot both pass the limit:
    PostgreSQL by a transaction-level advisory lock on the tenant, SQLite by its single writer
    (the insert takes the write lock before the count)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"webhooks:{tenant}".encode()).digest()[:8], "big",
                             signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def get(conn: Connection, tenant: str, endpoint_id: str) -> Endpoint:
    row = conn.execute(select(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.tenant == tenant)).first()
    if row is None:
        raise EndpointNotFound(endpoint_id)
    return Endpoint(**row._mapping)


def by_id(conn: Connection, endpoint_id: str) -> Endpoint | None:
    row = conn.execute(select(webhook_endpoints)
                       .where(webhook_endpoints.c.id == endpoint_id)).first()
    return None if row is None else Endpoint(**row._mapping)


def of_tenants(conn: Connection, tenants: set[str]) -> list[Endpoint]:
    rows = conn.execute(select(webhook_endpoints)
                        .where(webhook_endpoints.c.tenant.in_(sorted(tenants)))
                        .order_by(webhook_endpoints.c.created_at))
    return [Endpoint(**row._mapping) for row in rows]


def job_secret(conn: Connection, tenant: str) -> Endpoint | None:
    """The endpoint row that signs deliveries to jobs' own webhook_url, if the tenant made one."""
    row = conn.execute(select(webhook_endpoints).where(
        webhook_endpoints.c.tenant == tenant, webhook_endpoints.c.url.is_(None))).first()
    return None if row is None else Endpoint(**row._mapping)


def delete_endpoint(conn: Connection, tenant: str, endpoint_id: str) -> None:
    """Delete the endpoint; its events still waiting are given up (dead) at once."""
    done = conn.execute(delete(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.tenant == tenant))
    if not done.rowcount:
        raise EndpointNotFound(endpoint_id)
    give_up(conn, endpoint_id, "the endpoint was deleted")


def give_up(conn: Connection, endpoint_id: str, reason: str) -> int:
    """Mark the endpoint's pending events dead: nothing retries them. Returns how many."""
    now = utcnow()
    return conn.execute(update(webhook_events).where(
        webhook_events.c.endpoint_id == endpoint_id, webhook_events.c.status == "pending",
    ).values(status="dead", finished_at=now, lease_until=None, last_error=reason)).rowcount


def rotate(conn: Connection, sealer: Sealer, tenant: str, endpoint_id: str,
           grace: timedelta) -> tuple[Endpoint, str]:
    """A new secret; the current one goes on signing (as a second signature) for `grace`."""
    current = get(conn, tenant, endpoint_id)
    secret = new_secret()
    conn.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(
        secret=sealer.seal(secret), previous_secret=current.secret,
        previous_until=utcnow() + grace))
    return get(conn, tenant, endpoint_id), secret


def disable(conn: Connection, endpoint_id: str, reason: str) -> None:
    """Disable the endpoint; its events still waiting are given up (dead) at once."""
    done = conn.execute(update(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.url.is_not(None),
        webhook_endpoints.c.disabled_at.is_(None),
    ).values(disabled_at=utcnow(), disabled_reason=reason))
    if done.rowcount:
        give_up(conn, endpoint_id, f"the endpoint was disabled: {reason}")

