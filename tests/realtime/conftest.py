"""The real-time tests use the private stacks of the fault tests: their own Redis and worker."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.faults.conftest import Stack, stack  # noqa: F401 - the fixture, shared
from tests.support.tenants import Tenant

SETOSA = [5.1, 3.5, 1.4, 0.2]


def until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def occupy(s: Stack, tenant: Tenant, ms: int) -> list[str]:
    """Keep both worker processes busy for `ms` milliseconds; return the two job ids once both
    are running."""
    ids = []
    for _ in range(2):  # apart, so they form two micro-batches, one per process
        ids.append(tenant.submit("sleepy", [[ms, 0]], priority="interactive"))
        until(lambda: tenant.get(f"/v1/jobs/{ids[-1]}").json()["status"] == "running",
              what="a sleepy job to start")
    return ids
