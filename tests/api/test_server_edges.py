"""What a real `predq api` (gunicorn) answers at its edges: bodies without a length, requests
gunicorn refuses before the app sees them, a token on /metrics, security headers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.core.settings import Settings
from tests.support.processes import ApiProcess, free_port
from tests.support.tenants import Tenant

TOKEN = "scrape-me-7f3a"


@pytest.fixture(scope="module")
def api(settings: Settings, engine: object, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[ApiProcess, Path]]:
    runtime = tmp_path_factory.mktemp("xdg")  # where gunicorn would put its control socket
    edges = settings.replace(port=free_port(), max_body_bytes=5000, metrics_token=TOKEN)
    server = ApiProcess(edges, tmp_path_factory.mktemp("edges") / "api.log",
                        env={"XDG_RUNTIME_DIR": str(runtime)})
    yield server, runtime
    server.stop()


def raw(api: ApiProcess, request: bytes) -> bytes:
    port = int(api.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def chunked(tenant: Tenant, body: bytes) -> bytes:
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()
    parts = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                     for i in range(0, len(body), 1000))
    return head + parts + b"0\r\n\r\n"


def test_a_chunked_json_body_past_the_limit_is_refused_not_cut(
    api: tuple[ApiProcess, Path], tenant: Tenant,
) -> None:
    server, _ = api
    fits = b'{"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}'
    assert raw(server, chunked(tenant, fits)).startswith(b"HTTP/1.1 202")
    # Valid JSON just past the limit (padding in a string), sent whole, so that the server
    # has read all of it when it answers. Cut at 5,000 bytes it would be accepted short: 413.
    big = b'{"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]], "x": "' + b"a" * 5100 + b'"}'
    reply = raw(server, chunked(tenant, big))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b'"payload_too_large"' in reply and b"5000 bytes" in reply


@pytest.mark.parametrize(("request_bytes", "status"), [
    # Past gunicorn's limits (a 4,094-byte request line, 100 header fields), yet small enough
    # to arrive in one read: the answer is not lost to a reset for unread bytes.
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(120))
     + b"\r\n", b"431"),
    (b"NOT A REQUEST\r\n\r\n", b"400"),
])
def test_what_gunicorn_refuses_itself_is_answered_in_json(
    api: tuple[ApiProcess, Path], request_bytes: bytes, status: bytes,
) -> None:
    reply = raw(api[0], request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), reply[:300]
    assert b"Content-Type: application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] and error["message"]


def test_metrics_need_the_operators_token_when_one_is_set(api: tuple[ApiProcess, Path]) -> None:
    url = api[0].url + "/metrics"
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    scraped = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert scraped.status_code == 200 and "predq_http_requests_total" in scraped.text


def test_pages_carry_security_headers(api: tuple[ApiProcess, Path]) -> None:
    for path in ("/", "/docs", "/static/dashboard.js", "/openapi.json", "/healthz"):
        answer = requests.get(api[0].url + path, timeout=10)
        assert answer.status_code == 200, path
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe-inline" not in policy
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_no_gunicorn_control_socket_is_left_behind(api: tuple[ApiProcess, Path]) -> None:
    assert requests.get(api[0].url + "/healthz", timeout=10).status_code == 200
    assert list(api[1].iterdir()) == []  # every `predq api` of a host would share it
