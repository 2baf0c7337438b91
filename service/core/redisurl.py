"""How `REDIS_URL` names Redis: one server (`redis://`, `rediss://`, `unix://`), or a group
that Redis Sentinel watches and fails over (`redis+sentinel://`).

The one setting is read here, and each Redis user spells it its own way from here: kombu's
`sentinel://` URLs with `master_name` (service/core/broker.py), redis-py's `Sentinel` client
(service/store/redisclient.py), the `limits` package's storage (service/tenants/limits.py).

A Sentinel URL names every sentinel, the group's name and optionally a database number:

    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB][?sentinel_password=P]

PASSWORD is the Redis servers' (`requirepass`, `masterauth`); the sentinels are reached
without one unless `sentinel_password` names theirs. This is the `limits` package's spelling,
plus the database number.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from redis.backoff import NoBackoff
from redis.retry import Retry

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class Sentinels:
    """A Redis group behind Sentinel: where its sentinels answer and what they call it."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None

    def kombu_url(self) -> str:
        """kombu's spelling: one `sentinel://` URL per sentinel, joined by `;` (kombu takes
        the servers' password and the database from the first)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.hosts)

    def sentinel_kwargs(self) -> dict[str, Any]:
        """How to reach a sentinel. It answers in milliseconds, and a client asks them in
        turn until one answers: a dead sentinel's host costs half a second, not a client's
        whole discovery of the master. No retries: redis-py's default for a client (three,
        backing off up to 10 s) made a dead first sentinel cost every discovery 5 s or more,
        and the next sentinel is the retry."""
        found: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 0.5,
                                 "retry": Retry(NoBackoff(), 0), **tcp_keepalive()}
        if self.sentinel_password:
            found["password"] = self.sentinel_password
        return found


def sentinels(url: str) -> Sentinels | None:
    """The Sentinel group `url` names, or None for one server's URL. Raises ValueError for
    a `redis+sentinel://` URL that lacks a host or the group's name."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return None
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hosts = tuple(_host_port(item) for item in netloc.split(",") if item)
    path = [piece for piece in parts.path.split("/") if piece]
    if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"REDIS_URL: expected {SENTINEL_SCHEME}://[:password@]host:port"
                         "[,host:port...]/service[/db], got " + _without_password(url))
    query = parse_qs(parts.query)
    return Sentinels(hosts, unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                     unquote(parts.password) if parts.password else None,
                     query.get("sentinel_password", [None])[0])


def tcp_keepalive() -> dict[str, Any]:
    """TCP options for every connection to a Redis server or a sentinel over the network.

    A host that vanishes (its link cut, its machine gone) sends no FIN and no RST: without
    these, a worker's blocked BRPOP or a waiter's subscription would wait on it for the
    kernel's 15 minutes of retransmissions, and never follow Sentinel to the new master
    (celery#6348). Keepalives end an idle connection 5 s after the last packet; the user
    timeout ends one whose request went unanswered 5 s after it was sent."""
    options = {name: value for name, value in (("TCP_KEEPIDLE", 2), ("TCP_KEEPINTVL", 1),
                                               ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 5000))
               if hasattr(socket, name)}  # Linux has them all; a laptop's OS may lack some
    return {"socket_keepalive": True,
            "socket_keepalive_options": {getattr(socket, name): value
                                         for name, value in options.items()}}


def _host_port(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    return host.strip("[]"), int(port) if port else DEFAULT_SENTINEL_PORT


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
