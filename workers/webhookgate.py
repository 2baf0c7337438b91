"""Fair shares of the deliverer's threads: each tenant holds at most `per_tenant` of them at
once; its other events wait in a queue of its own, in the order they came, and are sent by
the threads it already holds as each attempt ends. So a tenant whose endpoints are slow waits
behind itself, and the other threads stay free for the other tenants.

The queues live in this process's memory only: every event in them is pending in SQL, so an
event lost with the process (or waiting longer than the reconciler's patience) is sent again
by the reconciler's sweep of the outbox, and a second copy of an id is never queued twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque


class TenantGate:
    """Per-tenant slots and waiting queues, shared by the threads of one process."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._lock = threading.Lock()
        self._held: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, deque[str]] = defaultdict(deque)
        self._queued: set[str] = set()

    def enter(self, tenant: str, event_id: str) -> bool:
        """Take a slot of `tenant` for `event_id` (True), or queue the event behind the
        tenant's own (False: a thread holding one of its slots will send it)."""
        with self._lock:
            if self._held[tenant] < self.per_tenant:
                self._held[tenant] += 1
                return True
            if event_id not in self._queued:
                self._queued.add(event_id)
                self._waiting[tenant].append(event_id)
            return False

    def next_or_leave(self, tenant: str) -> str | None:
        """The tenant's next waiting event, keeping the slot; or None, giving the slot up."""
        with self._lock:
            waiting = self._waiting.get(tenant)
            if waiting:
                event_id = waiting.popleft()
                self._queued.discard(event_id)
                return event_id
            self._waiting.pop(tenant, None)
            self._held[tenant] -= 1
            if not self._held[tenant]:
                del self._held[tenant]
            return None

    def held(self, tenant: str) -> int:
        """Slots the tenant holds now."""
        with self._lock:
            return self._held.get(tenant, 0)

    def waiting(self, tenant: str) -> int:
        """Events of the tenant waiting for one of its slots."""
        with self._lock:
            return len(self._waiting.get(tenant, ()))
