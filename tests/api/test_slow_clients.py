"""Slow-loris: clients that trickle their request cannot hold a connection for long."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.core.settings import Settings
from tests.support.processes import ApiProcess, free_port
from tests.support.tenants import Tenant


@pytest.fixture(scope="module")
def api(settings: Settings, engine: object, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[ApiProcess]:
    tight = settings.replace(port=free_port(), api_read_timeout=1.0, api_body_timeout=3.0)
    server = ApiProcess(tight, tmp_path_factory.mktemp("slow") / "api.log")
    yield server
    server.stop()


def connect(api: ApiProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=30)
    return sock


def headers(tenant: Tenant, length: int) -> bytes:
    return (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection. A reset (the server closed
    with bytes of ours unread) ends it too, keeping what came before it."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_body_that_stalls_is_answered_408_and_closed(api: ApiProcess, tenant: Tenant) -> None:
    with connect(api) as sock:
        sock.sendall(headers(tenant, 1000) + b'{"model": "iris"')
        reply = answer(sock)  # no more bytes are sent: the server must end it
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b'"code":"request_timeout"' in reply.replace(b" ", b"")
    assert b"stalled for more than 1 seconds" in reply


def test_a_body_that_trickles_is_cut_off_at_the_total_deadline(api: ApiProcess,
                                                                tenant: Tenant) -> None:
    with connect(api) as sock:
        sock.sendall(headers(tenant, 10_000))
        sock.settimeout(0.3)
        reply = b""
        for _ in range(200):  # a byte every 0.3 s: each read is in time, the whole is not
            try:
                sock.sendall(b" ")
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if reply:
                break
        sock.settimeout(30)
        reply += answer(sock)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within 3 seconds" in reply


def test_headers_that_never_end_are_dropped_and_others_are_served_meanwhile(
    api: ApiProcess
) -> None:
    socks = [connect(api) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        assert requests.get(api.url + "/healthz", timeout=10).status_code == 200
        for sock in socks:  # each recv waits at most 30 s (the socket's timeout)
            assert answer(sock) == b""  # closed by the server (keep-alive: 2 s), unanswered
    finally:
        for sock in socks:
            sock.close()


def test_a_prompt_body_is_served_as_usual(api: ApiProcess, tenant: Tenant) -> None:
    response = requests.post(api.url + "/v1/jobs", timeout=30,
                             headers={"Authorization": f"Bearer {tenant.key}"},
                             json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert response.status_code == 202, response.text


def test_the_log_names_no_socket_errors(api: ApiProcess) -> None:
    assert "Socket error processing request" not in Path(api.log_path).read_text()
