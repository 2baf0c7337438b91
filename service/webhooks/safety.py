"""Which webhook targets predq may call: never its own network (SSRF).

Whoever submits a job names the webhook URL, so a plain POST would let them reach Redis, the
database or the cloud metadata service from inside predq. This module says what is off limits;
`service.webhooks.sender` holds the transport that enforces it on every connection:

* `check_url`, at registration: a clear 400 for a control character, a scheme other than
  http(s), credentials in the URL, a literal address that is not public (in any spelling a
  resolver accepts) or a local name.
* `check_resolved`: `check_url`, then the host's current addresses, for a caller that wants an
  early answer about a name. Registration does not call it: DNS may not point at the receiver
  yet, may answer differently a second later (rebinding), and a resolver that does not answer
  would stall the request. The connect-time check below is the one that holds.
* `parse_target`, `resolve` and `check_address`, at connect time: `SafeSender` resolves the host
  itself and refuses the whole answer if any address is not public.

An operator opens holes on purpose with an `AllowList`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from urllib3 import exceptions as u3
from urllib3.util import parse_url

from service.core.errors import InvalidInput, PredqError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Shaped like socket.getaddrinfo(host, port, family, type); tests pass a stub.
Resolver: TypeAlias = Callable[[str, int, int, int], Sequence[tuple[Any, ...]]]


class UnsafeTarget(PredqError):
    """The webhook URL would reach an address predq must not call: refused, never retried."""

    status = 400
    code = "unsafe_webhook_target"

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook_url: {reason}", field="webhook_url")
        self.reason = reason


# First match names the reason. IPv4-mapped, NAT64 and 6to4 addresses are judged by the IPv4
# address they carry (`_embedded_ipv4`); ::/8 also refuses the deprecated IPv4-compatible form.
_BLOCKED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),  # 169.254.169.254: cloud metadata
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "reserved"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # with 255.255.255.255, broadcast
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),
        ("64:ff9b:1::/48", "reserved"),
        ("100::/64", "reserved"),
        ("2001::/23", "reserved"),  # Teredo, ORCHID, benchmarking
        ("2001:db8::/32", "reserved"),
        ("3fff::/20", "reserved"),
        ("5f00::/16", "reserved"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be called ("loopback", "private", ...), or None if it is public."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return blocked_reason(inner)
    for network, why in _BLOCKED:
        if ip in network:
            return why
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "scoped"
    return None if ip.is_global else "reserved"


@dataclass(frozen=True)
class AllowEntry:
    """One operator exception: a hostname or a network, on any port or on one."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, ip: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == _name(host)
        if ip is None or self.network is None:
            return False
        return any(a in self.network for a in (ip, _embedded_ipv4(ip)) if a is not None)


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks an operator lets webhooks reach although they are not public."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Parse comma-separated `hostname`, `ip` or `cidr`, each with an optional `:port`
        (`[v6]:port` for IPv6). Empty allows nothing; a bad entry raises ValueError."""
        return cls(tuple(_parse_entry(item.strip()) for item in text.split(",") if item.strip()))

    def allows(self, host: str, ip: IPAddress | None, port: int) -> bool:
        """Whether `host` (resolved to `ip`, None before resolving) may be called on `port`."""
        return any(entry.matches(host, ip, port) for entry in self.entries)


_HOSTNAME = re.compile(r"[a-z0-9_][a-z0-9_-]{0,62}(\.[a-z0-9_][a-z0-9_-]{0,62})*")
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")  # a label resolvers read as (part of) IPv4


def _parse_entry(item: str) -> AllowEntry:
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", item)
    if bracketed:
        where, port = bracketed[1], bracketed[2]
    elif item.count(":") == 1:
        where, _, port = item.partition(":")
    else:
        where, port = item, None  # a name, an IPv4 network, or IPv6 without a port
    number = None if port is None else int(port) if port.isdigit() else -1
    if number is not None and not 0 < number < 65536:
        raise ValueError(f"webhook allow list entry {item!r}: bad port")
    try:
        return AllowEntry(network=ipaddress.ip_network(where), port=number)
    except ValueError:
        name = _name(where)
        if "/" in where or _NUMBER.fullmatch(name.rsplit(".", 1)[-1]) or not _HOSTNAME.fullmatch(
            name
        ):
            raise ValueError(
                f"webhook allow list entry {item!r}: not a hostname, IP address or network"
                " (a network needs its host bits zero, e.g. 10.0.0.0/8)"
            ) from None
        return AllowEntry(host=name, port=number)


def _name(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


# Names that resolve to this machine or a local network however DNS is set up (a name without
# a dot is a docker-compose service or a search-domain lookup).
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa")


@dataclass(frozen=True)
class Target:
    """A webhook URL that passed `check_url`, as the sender requests it."""

    scheme: str
    host: str
    port: int
    path: str


def check_url(url: str, allow: AllowList) -> None:
    """Refuse, at registration, a webhook URL that is unsafe whatever DNS says."""
    parse_target(url, allow)


def parse_target(url: str, allow: AllowList) -> Target:
    """`check_url`, returning what the sender needs to make the request."""
    if any(c < " " or c == "\x7f" for c in url):  # never in a URL; PostgreSQL refuses a NUL
        raise UnsafeTarget("contains a control character")
    # One parser, urllib3's, for the check and for the request: no parser differential.
    try:
        parsed = parse_url(url)
    except u3.LocationParseError:
        raise UnsafeTarget("is not a valid URL") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget(f"scheme {scheme or 'missing'!r} is not allowed; use http or https")
    if parsed.auth is not None:
        raise UnsafeTarget("must not carry credentials (user:password@)")
    if not parsed.host:
        raise UnsafeTarget("has no host")
    host = parsed.host
    port = parsed.port if parsed.port is not None else (443 if scheme == "https" else 80)
    if port == 0:
        raise UnsafeTarget("port 0 is not a port")
    ip = _literal_address(host)
    if ip is not None:
        check_address(ip, host, port, allow)
    elif _is_local_name(host) and not allow.allows(host, None, port):
        raise UnsafeTarget(f"{host} names this machine or a local network"
                           + _how_to_allow(host, port))
    return Target(scheme, host, port, parsed.request_uri)


def _literal_address(host: str) -> IPAddress | None:
    """The address a literal host stands for; refuses spellings other than a.b.c.d and [v6]."""
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UnsafeTarget(f"{host} is not a valid IPv6 address") from None
    if not _NUMBER.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        return None
    ip = _inet_aton(host.rstrip("."))
    if ip is None:
        raise UnsafeTarget(f"{host} is neither a hostname nor an IPv4 address")
    if host != str(ip):
        raise UnsafeTarget(f"{host} is a non-standard spelling of {ip}; write {ip}")
    return ip


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """IPv4 as resolvers read it: 1 to 4 parts in decimal, 0-octal or 0x-hex, the last part
    filling the remaining bytes (127.1, 2130706433, 0x7f.1, 0177.0.0.1)."""
    values = []
    for part in text.split("."):
        if len(part) > 40:
            return None
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", part):
            values.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]+", part):
            values.append(int(part, 8))
        elif re.fullmatch(r"0|[1-9][0-9]*", part):
            values.append(int(part))
        else:
            return None
    *head, last = values
    if len(values) > 4 or any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    return ipaddress.IPv4Address(last + sum(v << (8 * (3 - i)) for i, v in enumerate(head)))


def _is_local_name(host: str) -> bool:
    name = _name(host)
    return "." not in name or name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES)


def check_address(ip: IPAddress, host: str, port: int, allow: AllowList) -> None:
    """Refuse `ip`, an address of `host`, unless it is public or the operator allowed it."""
    reason = blocked_reason(ip)
    if reason is None or allow.allows(host, ip, port):
        return
    what = f"{'an' if reason[0] in 'aeiou' else 'a'} {reason} address"
    try:
        literal = ipaddress.ip_address(_name(host)) == ip
    except ValueError:
        literal = False
    raise UnsafeTarget((f"{host} is {what}" if literal else f"{host} resolves to {ip}, {what}")
                       + _how_to_allow(host, port))


def _how_to_allow(host: str, port: int) -> str:
    """Name the setting that allows a private target: a laptop's receiver is one."""
    entry = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
    return f"; the operator may allow it: PREDQ_WEBHOOK_ALLOW_HOSTS={entry}"


def check_resolved(url: str, allow: AllowList, resolver: Resolver = socket.getaddrinfo) -> None:
    """`check_url`, then refuse a host any of whose current addresses is not public. An early,
    clear error only: the sender checks again at connect time, since DNS can change."""
    target = parse_target(url, allow)
    try:
        answers = resolve(resolver, target.host.strip("[]"), target.port)
    except OSError as e:
        raise InvalidInput("webhook_url", f"{target.host} does not resolve ({e})") from None
    for *_, ip in answers:
        check_address(ip, target.host, target.port, allow)


#: (family, type, proto, sockaddr with the port filled in, address), ready for socket.connect.
Answer: TypeAlias = tuple[int, int, int, tuple[Any, ...], IPAddress]


def resolve(resolver: Resolver, host: str, port: int) -> list[Answer]:
    """Every address of `host` (unchecked); socket.gaierror if there is none."""
    answers = []
    for family, kind, proto, _canonical, sockaddr in resolver(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM
    ):
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            raise UnsafeTarget(f"{host} resolves to {sockaddr[0]!r}, not an address") from None
        answers.append((family, kind, proto, (sockaddr[0], port, *sockaddr[2:]), ip))
    if not answers:
        raise socket.gaierror(f"{host} has no address")
    return answers


