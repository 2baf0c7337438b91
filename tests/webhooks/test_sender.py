"""Webhook targets that are not public are refused at connect time, whatever DNS says later.

Real HTTP on 127.0.0.1 only: stub resolvers stand in for DNS, and a tripwire fails any connect()
to another address, so a bug here cannot send traffic off the machine.
"""

from __future__ import annotations

import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.webhooks.safety import AllowList, UnsafeTarget, check_resolved, check_url
from service.webhooks.sender import DeliveryFailed, DeliveryTimeout, SafeSender

PUBLIC = "93.184.216.34"  # only ever returned by stub resolvers, never connected to


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connect() off loopback fails the test (AssertionError: nothing here catches it)."""
    real = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            try:
                ip = ipaddress.ip_address(address[0])
            except ValueError:
                raise AssertionError(f"connect() to a name: {address}") from None
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if not ip.is_loopback:
                raise AssertionError(f"connect() off loopback: {address}")
        real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


class StubResolver:
    """getaddrinfo from a script: call n gets answers[n] (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int, family: int = 0, kind: int = 0) -> list[Any]:
        self.asked.append(host)
        addresses = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.receiver.requests.append(Seen(self.command, self.path, headers, body))
        status, extra, payload = self.server.receiver.reply
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.receiver = receiver

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.receiver.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the sender hangs up on purpose after max_body bytes


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every connection and request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.requests: list[Seen] = []
        self.reply: tuple[int, dict[str, str], bytes] = (200, {}, b"ok")
        self.server = _Server(self)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that takes TCP connections into its backlog and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def contacted(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def allowing(*entries: str, **kwargs: Any) -> SafeSender:
    return SafeSender(allow=AllowList.parse(",".join(entries)), **kwargs)


# --- sending: SafeSender -------------------------------------------------------------------


def test_allow_listed_receiver_gets_the_post_with_body_and_headers(receiver: Receiver) -> None:
    receiver.reply = (201, {"X-Receipt": "r-1"}, b"thanks")
    sender = allowing(f"127.0.0.1:{receiver.port}")
    headers = {"Content-Type": "application/json", "X-Predq-Signature": "sha256=abc"}

    response = sender.post(receiver.url("/hook?x=1"), b'{"job": "j-1"}', headers, timeout=2.0)

    assert (response.status, response.text, response.truncated) == (201, "thanks", False)
    assert response.headers["x-receipt"] == "r-1"
    assert 0 < response.elapsed < 2.0
    [seen] = receiver.requests
    assert (seen.method, seen.path, seen.body) == ("POST", "/hook?x=1", b'{"job": "j-1"}')
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-predq-signature"] == "sha256=abc"
    assert seen.headers["host"] == f"127.0.0.1:{receiver.port}"


def test_receiver_not_allow_listed_is_refused_without_a_connection(receiver: Receiver) -> None:
    with pytest.raises(UnsafeTarget, match="loopback"):
        SafeSender().post(receiver.url(), b"{}", {}, timeout=2.0)
    assert receiver.connections == 0


def test_public_name_resolving_to_loopback_is_refused_at_connect_time(
    receiver: Receiver,
) -> None:
    url = receiver.url(host="hooks.example.com")
    check_url(url, AllowList())  # the name alone looks fine
    resolver = StubResolver(["127.0.0.1"])

    with pytest.raises(UnsafeTarget, match="resolves to 127.0.0.1, a loopback"):
        SafeSender(resolver=resolver).post(url, b"{}", {}, timeout=2.0)

    assert resolver.asked == ["hooks.example.com"]
    assert receiver.connections == 0


@pytest.mark.parametrize("address", ["10.0.0.5", "::ffff:127.0.0.1", "169.254.169.254", "fd00::5"])
def test_public_name_resolving_to_non_public_address_is_refused_at_connect_time(
    receiver: Receiver, address: str
) -> None:
    resolver = StubResolver([address])
    with pytest.raises(UnsafeTarget, match="resolves to"):
        SafeSender(resolver=resolver).post(
            receiver.url(host="hooks.example.com"), b"{}", {}, timeout=2.0
        )
    assert resolver.asked == ["hooks.example.com"]
    assert receiver.connections == 0


def test_dns_rebinding_after_the_check_is_refused_at_connect_time(receiver: Receiver) -> None:
    url = receiver.url(host="rebind.example.com")
    resolver = StubResolver([PUBLIC], ["127.0.0.1"])
    check_resolved(url, AllowList(), resolver)  # registration sees a public address

    with pytest.raises(UnsafeTarget, match="resolves to 127.0.0.1"):
        SafeSender(resolver=resolver).post(url, b"{}", {}, timeout=2.0)

    assert resolver.asked == ["rebind.example.com"] * 2
    assert receiver.connections == 0


@pytest.mark.parametrize("answer", [[PUBLIC, "10.0.0.5"], ["10.0.0.5", PUBLIC]])
def test_answer_with_one_private_address_is_refused_entirely(answer: list[str]) -> None:
    url = "http://mixed.example.com/hook"
    with pytest.raises(UnsafeTarget, match="10.0.0.5"):
        check_resolved(url, AllowList(), StubResolver(answer))
    with pytest.raises(UnsafeTarget, match="10.0.0.5"):
        SafeSender(resolver=StubResolver(answer)).post(url, b"{}", {}, timeout=2.0)


def test_redirect_is_returned_not_followed(receiver: Receiver, listener: socket.socket) -> None:
    redis_port = listener.getsockname()[1]
    receiver.reply = (302, {"Location": f"http://127.0.0.1:{redis_port}/"}, b"")
    # Even with the redirect target allow-listed, a 3xx is an answer, not an instruction.
    sender = allowing(f"127.0.0.1:{receiver.port}", f"127.0.0.1:{redis_port}")

    response = sender.post(receiver.url(), b"{}", {}, timeout=2.0)

    assert response.status == 302
    assert response.headers["location"] == f"http://127.0.0.1:{redis_port}/"
    assert len(receiver.requests) == 1
    assert not contacted(listener)


def test_allow_listed_name_connects_to_its_checked_address_and_keeps_the_host_header(
    receiver: Receiver,
) -> None:
    sender = allowing(f"hooks.internal:{receiver.port}", resolver=StubResolver(["127.0.0.1"]))
    response = sender.post(receiver.url(host="hooks.internal"), b"{}", {}, timeout=2.0)
    assert response.status == 200
    assert receiver.requests[0].headers["host"] == f"hooks.internal:{receiver.port}"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for hooks.internal (its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=hooks.internal", "-addext", "subjectAltName=DNS:hooks.internal"],
        check=True, capture_output=True,
    )
    return cert, key


def test_https_verifies_certificate_and_sends_sni_for_the_hostname(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    receiver = Receiver(tls=tls)
    try:
        sender = allowing(
            f"hooks.internal:{receiver.port}", f"other.internal:{receiver.port}",
            resolver=StubResolver(["127.0.0.1"]), ca_certs=str(cert),
        )
        url = receiver.url(host="hooks.internal", scheme="https")
        assert sender.post(url, b"{}", {}, timeout=2.0).status == 200
        assert names == ["hooks.internal"]

        # Same address, another name: the certificate does not cover it.
        with pytest.raises(DeliveryFailed, match="(?i)certificate"):
            sender.post(receiver.url(host="other.internal", scheme="https"), b"{}", {}, 2.0)
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_unresponsive_receiver_times_out_quickly(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DeliveryTimeout, match="did not answer within 0.5 s"):
        allowing(f"127.0.0.1:{port}").post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_trickling_receiver_is_cut_off_at_the_deadline(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryTimeout):
            allowing(f"127.0.0.1:{port}").post(
                f"http://127.0.0.1:{port}/", b"{}", {}, timeout=0.5
            )
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        thread.join(5)


def test_oversized_response_body_is_capped(receiver: Receiver) -> None:
    receiver.reply = (200, {}, b"x" * (1024 * 1024))
    sender = allowing(f"127.0.0.1:{receiver.port}", max_body=64 * 1024)
    response = sender.post(receiver.url(), b"{}", {}, timeout=2.0)
    assert (response.status, len(response.body), response.truncated) == (200, 64 * 1024, True)


def test_refused_connection_is_a_delivery_failure_not_a_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(DeliveryFailed) as failed:
        allowing(f"127.0.0.1:{port}").post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=2.0)
    assert not isinstance(failed.value, DeliveryTimeout)


def test_sender_keeps_the_host_header_of_the_url() -> None:
    with pytest.raises(ValueError, match="Host"):
        SafeSender().post("https://hooks.example.com/", b"{}", {"Host": "x"}, timeout=1.0)
