"""One private stack for the webhook tests (API, worker, deliverer, Redis) and a receiver on
127.0.0.1 that the stack's allow list opens, with scripted answers per path."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import Engine

from service.core.settings import Settings
from service.models.registry import ModelInfo
from tests.faults.conftest import Stack
from tests.support.processes import free_port
from tests.support.tenants import Tenant


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers POST /<script>/<key>: `ok` 200; `flaky` 500, 503, then 200; `gone` 410;
    `redirect` 302 to Redis's port; `slow` sleeps past the deliverer's timeout."""

    port: int
    received: list[Received] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == "/" + path]

    def answer(self, path: str) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.counts[path] += 1
            n = self.counts[path]
        script = path.strip("/").split("/")[0]
        if script == "flaky":
            return ((500, {}) if n == 1 else (503, {"Retry-After": "0"}) if n == 2 else (200, {}))
        if script == "gone":
            return 410, {}
        if script == "redirect":
            return 302, {"Location": "http://127.0.0.1:6379/"}
        return 200, {}


def until(check: Callable[[], bool], timeout: float = 30, step: Callable[[], object] | None = None,
          what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if step is not None:
            step()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    port = free_port()
    state = Receiver(port)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.received.append(Received(self.path, dict(self.headers.items()), body))
            status, headers = state.answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()  # allowed, and nothing listens there


@pytest.fixture(scope="module")
def hooks(settings: Settings, engine: Engine, models: dict[str, ModelInfo], receiver: Receiver,
          dead_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("hooks")
    private = settings.replace(
        redis_url=f"unix://{directory / 'redis.sock'}",
        webhook_allow_hosts=f"127.0.0.1:{receiver.port},127.0.0.1:{dead_port}",
        webhook_retry_schedule="0.2,0.2,0.2", webhook_timeout=2.0, republish_after=0.5,
        webhook_max_inline_bytes=2000, webhook_max_endpoints=3,
    )
    stack = Stack(private, directory, engine)
    stack.start_worker()
    stack.start_deliverer()
    yield stack
    stack.close()


@pytest.fixture
def tenant(hooks: Stack) -> Tenant:
    return hooks.tenant()  # cleaned up with the stack
