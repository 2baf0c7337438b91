"""Outbound HTTP for webhooks that cannot be pointed at predq's own network (SSRF).

`SafeSender` enforces the policy of `service.webhooks.safety` at connect time: its connections
resolve the host themselves, refuse the whole answer if any address is not public, and connect
to an address they checked. The check at registration alone would not do: DNS may answer
differently a second later (rebinding). TLS SNI, certificate verification and the Host header
still use the hostname.

It never follows redirects, bounds each attempt by one deadline and reads at most `max_body`
bytes of the answer.

Why no library: advocate is archived and pins urllib3 < 2; requests-hardened pins the first
resolved address but only knows "allow loopback or not" (no allow list of hosts, networks and
ports, no injectable resolver, no body cap); the httpx-based ones are new and would add httpx.
So this is a urllib3 connection overriding `_new_conn`, the one place urllib3 resolves and
connects. urllib3 rather than requests on top: requests takes proxies and .netrc from the
environment (the check would then see the proxy, not the receiver) and keys its pools on
fields that cannot carry the guard.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout

from service.core.errors import PredqError
from service.webhooks.safety import AllowList, Resolver, check_address, parse_target, resolve


class DeliveryFailed(PredqError):
    """The receiver was unreachable or spoke broken HTTP: a failed attempt, worth another."""

    status = 502
    code = "webhook_delivery_failed"


class DeliveryTimeout(DeliveryFailed):
    code = "webhook_timeout"


@dataclass(frozen=True)
class _Guard:
    allow: AllowList
    resolver: Resolver

    def connect(self, conn: HTTPConnection) -> socket.socket:
        """Resolve, check every address, then connect to the checked addresses in order."""
        answers = resolve(self.resolver, conn._dns_host, conn.port)
        for *_, ip in answers:
            check_address(ip, conn.host, conn.port, self.allow)
        # One connect timeout for all addresses, not one each.
        timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
        deadline = None if timeout is None else time.monotonic() + timeout
        error: OSError = TimeoutError(f"connecting to {conn.host} timed out")
        for family, kind, proto, sockaddr, _ip in answers:
            if deadline is not None and time.monotonic() >= deadline:
                break
            sock = socket.socket(family, kind, proto)
            try:
                for option in conn.socket_options or ():
                    sock.setsockopt(*option)
                if deadline is not None:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                if conn.source_address:
                    sock.bind(conn.source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                sock.close()
                error = e
        raise error


def _open(conn: HTTPConnection, guard: _Guard) -> socket.socket:
    """urllib3's `_new_conn` with the guard in the middle, raising what urllib3 would."""
    try:
        sock = guard.connect(conn)
    except socket.gaierror as e:
        raise u3.NameResolutionError(conn.host, conn, e) from e
    except TimeoutError as e:
        raise u3.ConnectTimeoutError(conn, f"connecting to {conn.host} timed out") from e
    except OSError as e:
        raise u3.NewConnectionError(conn, f"cannot connect to {conn.host}: {e}") from e
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, guard: _Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def _new_conn(self) -> socket.socket:
        return _open(self, self.guard)


class _GuardedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, guard: _Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def _new_conn(self) -> socket.socket:
        return _open(self, self.guard)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


@dataclass(frozen=True)
class Response:
    """What one attempt got back: enough to log and decide on, never more than the cap."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    truncated: bool  # the receiver sent more than `body`
    elapsed: float  # seconds

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SafeSender:
    """POSTs to webhook receivers; reaches nothing that is not public unless `allow` says so."""

    allow: AllowList = field(default_factory=AllowList)
    resolver: Resolver = socket.getaddrinfo
    #: Bytes of the answer kept; the rest is never read.
    max_body: int = 64 * 1024
    #: CA bundle for https receivers (None: the system's).
    ca_certs: str | None = None

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """POST once within `timeout` seconds, redirects unfollowed (3xx is returned). Raises
        UnsafeTarget, DeliveryTimeout or DeliveryFailed; messages never quote the URL's path,
        which may hold a secret."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if any(name.lower() == "host" for name in headers):
            raise ValueError("the Host header comes from the URL")
        target = parse_target(url, self.allow)
        guard = _Guard(self.allow, self.resolver)
        pool: HTTPConnectionPool
        if target.scheme == "https":
            pool = _GuardedHTTPSPool(target.host, target.port, ca_certs=self.ca_certs, guard=guard)
        else:
            pool = _GuardedHTTPPool(target.host, target.port, guard=guard)
        where = f"{target.host}:{target.port}"
        started = time.monotonic()
        try:
            answer = pool.urlopen(
                "POST", target.path, body=body, headers=dict(headers), retries=False,
                redirect=False, timeout=Timeout(total=timeout), preload_content=False,
            )
            try:
                data, truncated = _read_capped(answer, self.max_body, started + timeout)
            finally:
                answer.close()  # never drain what a hostile receiver keeps sending
        except u3.NameResolutionError as e:
            raise DeliveryFailed(f"{where}: the name does not resolve ({e.__cause__})") from e
        except u3.NewConnectionError as e:  # a ConnectTimeoutError subclass, for history
            raise DeliveryFailed(f"{where}: cannot connect ({e.__cause__ or e})") from e
        except (u3.TimeoutError, TimeoutError) as e:
            raise DeliveryTimeout(f"{where} did not answer within {timeout} s") from e
        except (u3.HTTPError, OSError) as e:
            raise DeliveryFailed(f"{where}: {e}") from e
        finally:
            pool.close()
        headers_out = {name.lower(): answer.headers[name] for name in answer.headers}
        return Response(answer.status, headers_out, data, truncated, time.monotonic() - started)


def _read_capped(answer: BaseHTTPResponse, limit: int, deadline: float) -> tuple[bytes, bool]:
    """At most `limit` bytes of body, by `deadline`: a receiver cannot stream forever, nor
    trickle a byte just before each read timeout."""
    sock = getattr(answer.connection, "sock", None)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if sock is not None:
            sock.settimeout(remaining)
        chunk = answer.read1(min(65536, limit + 1 - size), decode_content=False)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit], size > limit
