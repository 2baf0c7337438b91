"""One tenant's slow receivers delay only that tenant: it holds at most its share of the
deliverer's threads, and another tenant's event goes out while all of its attempts hang."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import Engine, func, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import webhook_attempts, webhook_events
from tests.faults.conftest import Stack
from tests.support.processes import free_port
from tests.webhooks.conftest import Receiver, until

SETOSA = [5.1, 3.5, 1.4, 0.2]
THREADS, SHARE = 4, 2  # the deliverer's threads, and one tenant's share of them


class Hanging:
    """Accepts each POST and never answers it until `release()`: an attempt to it is in
    flight for as long as the test wants (the deliverer's timeout is far longer)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.held = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                with state.lock:
                    state.held += 1
                state.released.wait(300)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def in_flight(self) -> int:
        with self.lock:
            return self.held

    def release(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.release()


@pytest.fixture
def fair(settings: Settings, engine: Engine, models: dict[str, ModelInfo], receiver: Receiver,
         hanging: Hanging, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("fair")
    private = settings.replace(
        redis_url=f"unix://{directory / 'redis.sock'}",
        webhook_allow_hosts=f"127.0.0.1:{receiver.port},127.0.0.1:{hanging.port}",
        webhook_timeout=120.0, webhook_retry_schedule="600",
        webhook_concurrency=THREADS, webhook_tenant_concurrency=SHARE)
    stack = Stack(private, directory, engine)
    stack.start_worker()
    stack.start_deliverer()
    yield stack
    hanging.release()  # A's attempts end now, so the deliverer stops at once
    stack.close()


def attempts_of(engine: Engine, tenant: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(webhook_attempts).join(
            webhook_events, webhook_events.c.id == webhook_attempts.c.event_id).where(
            webhook_events.c.tenant == tenant)).scalar_one())


def test_a_tenant_with_hanging_receivers_does_not_delay_another_tenants_event(
    fair: Stack, engine: Engine, receiver: Receiver, hanging: Hanging
) -> None:
    """Tenant A's six events (six messages: each job ends on its own) go to a receiver that
    never answers within the attempt timeout. A holds its two threads and its other events
    wait behind them; tenant B's event takes a free thread and is delivered while every
    attempt of A is still in flight. (Before: A's messages took all four threads, and B's
    event waited for one of A's attempts to time out.)"""
    a, b = fair.tenant(), fair.tenant()
    assert a.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{hanging.port}/a"}
                  ).status_code == 201
    assert b.post("/v1/webhooks", json={"url": receiver.url(f"ok/{b.name}")}).status_code == 201
    for _ in range(6):
        assert a.wait(a.submit("iris", [SETOSA]))["status"] == "succeeded"
    until(lambda: hanging.in_flight() >= SHARE, what="A's attempts in flight")
    assert b.wait(b.submit("iris", [SETOSA]))["status"] == "succeeded"
    until(lambda: len(receiver.at(f"ok/{b.name}")) == 1, timeout=60,
          what="B's delivery (it waits behind A's hanging attempts)")
    assert hanging.in_flight() == SHARE  # A never held more than its share
    assert attempts_of(engine, a.name) == 0  # none of A's attempts had ended
    until(lambda: attempts_of(engine, b.name) == 1, what="B's attempt logged")
