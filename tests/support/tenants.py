"""A tenant of the API under test: its own key, an HTTP session that checks every answer
against the OpenAPI description, and the clean-up of everything it made."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import requests
from sqlalchemy import Engine, delete, select

from service.store.db import (
    api_keys,
    job_chunks,
    jobs,
    shadow_results,
    webhook_attempts,
    webhook_endpoints,
    webhook_events,
)
from service.tenants import keys
from tests.support.openapi_check import check_response


class Tenant:
    """A tenant with its own key, and an HTTP session that sends it."""

    def __init__(self, name: str, key: str, base_url: str) -> None:
        self.name, self.key, self.base_url = name, key, base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {key}"
        self.http.hooks["response"].append(check_response)  # every answer matches the spec

    def post(self, path: str, **kw: object) -> requests.Response:
        return self.http.post(self.base_url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def delete(self, path: str, **kw: object) -> requests.Response:
        return self.http.delete(self.base_url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def submit(self, model: str, inputs: list[object], **extra: object) -> str:
        response = self.post("/v1/jobs", json={"model": model, "inputs": inputs, **extra})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def wait(self, job_id: str, timeout: float = 30) -> dict[str, object]:
        """Poll until the job is final (the way a client would)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/v1/jobs/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                return job  # type: ignore[no-any-return]
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")


def make_tenant(engine: Engine, base_url: str,
                scopes: tuple[str, ...] = keys.DEFAULT_SCOPES, name: str | None = None
                ) -> Iterator[Tenant]:
    name = name or f"t-{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        key = keys.create_key(conn, name, scopes)
    tenant = Tenant(name, key, base_url)
    yield tenant
    tenant.http.close()
    with engine.begin() as conn:
        events = select(webhook_events.c.id).where(webhook_events.c.tenant == name)
        conn.execute(delete(webhook_attempts).where(webhook_attempts.c.event_id.in_(events)))
        conn.execute(delete(webhook_events).where(webhook_events.c.tenant == name))
        conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.tenant == name))
        owned = select(jobs.c.id).where(jobs.c.tenant == name)
        conn.execute(delete(job_chunks).where(job_chunks.c.job_id.in_(owned)))
        conn.execute(delete(shadow_results).where(shadow_results.c.job_id.in_(owned)))
        conn.execute(delete(jobs).where(jobs.c.tenant == name))
        conn.execute(delete(api_keys).where(api_keys.c.tenant == name))
