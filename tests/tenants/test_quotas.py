"""Rate-limit counts (service/tenants/limits.py: `Quotas`, on the `limits` package) live in a
Sentinel group's master, and go on being counted there after a switch-over."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine

from service.tenants.limits import Limits, Quotas, TenantLimits, set_limits
from tests.support.sentinel import SentinelGroup


def rows_counted(group: SentinelGroup, port: int, tenant: str) -> int:
    """The rows of `tenant` the server at `port` holds in its sliding window's keys."""
    client = group.client(port)
    return sum(int(client.get(key) or 0) for key in client.keys(f"*rows*{tenant}*"))


def test_counts_go_on_in_the_new_master_after_a_switch_over(
        sentinel_group: SentinelGroup, engine: Engine) -> None:
    tenant = f"quota-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        set_limits(conn, tenant, rows_per_minute=1000)
    quotas = Quotas(sentinel_group.url, TenantLimits(engine, Limits(0, 0)))
    quotas.take_rows(tenant, 10)
    assert rows_counted(sentinel_group, sentinel_group.master(), tenant) == 10

    new = sentinel_group.failover()
    quotas.take_rows(tenant, 7)
    # Both takes in the new master's window; had the count fallen back to this process's
    # memory (what Quotas does while Redis is unreachable), it would still hold 10.
    assert rows_counted(sentinel_group, new, tenant) == 17
