"""A small network of hosts on this machine, for `make cluster`: one network namespace per
host, each with loopback up and one veth link (its own addresses) to a bridge that lives in a
namespace of its own (the switch), so nothing is added to the machine's own network.

Every name starts with `pq` and the run's id, so two runs never meet and leftovers are plain
to see in `ip netns list`. `Network.close()` kills what still runs in the namespaces and
deletes them (their links go with them); it is safe to call twice, and `Network` calls it at
exit and on SIGTERM, SIGINT and SIGHUP too.

Faults, all silent drops as on a real network (no refusal a client could notice at once):
- `cut(host)` / `restore(host)`: the switch's end of the host's link goes down (and up).
- `partition(host, address)` / `heal(...)`: the host routes `address` through the switch,
  which does not forward: its packets there vanish, and the rest of the network still works.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType

CLONE_NEWNET = 0x40000000
SUBNET = "10.231.0"  # inside the run's own switch: never routed beyond it
SINK = f"{SUBNET}.254"  # the switch's own address: it drops what is routed to it


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; its output."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def available() -> bool:
    """Network namespaces can be made here (root, iproute2)."""
    return (os.geteuid() == 0 and shutil.which("ip") is not None
            and shutil.which("unshare") is not None
            and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0)


@dataclass
class Host:
    name: str  # short: data, api1, w1 ...
    netns: str  # pq<run>-<name>
    addresses: tuple[str, ...]
    port: str  # the switch's end of its link

    @property
    def address(self) -> str:
        return self.addresses[0]


@dataclass
class Network:
    """Hosts on one bridge. `add(name, n_addresses)` makes a host; see the module's doc."""

    run: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _next: int = 1
    _closed: bool = False

    def __post_init__(self) -> None:
        self.switch = f"pq{self.run}-switch"
        self._namespaces: list[str] = []
        self._home: int | None = None
        atexit.register(self.close)
        self._previous = {sig: signal.signal(sig, self._on_signal)
                          for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
                          } if threading.current_thread() is threading.main_thread() else {}
        self._netns(self.switch)
        ip("-n", self.switch, "link", "add", "pqbr", "type", "bridge")
        ip("-n", self.switch, "addr", "add", f"{SINK}/24", "dev", "pqbr")
        ip("-n", self.switch, "link", "set", "pqbr", "up")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through every `finally`, then atexit

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add(self, name: str, n_addresses: int = 1) -> Host:
        """A host `name` with `n_addresses` addresses of its own on the bridge."""
        netns = f"pq{self.run}-{name}"
        self._netns(netns)
        port = f"pq{name}"[:15]
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", netns)
        ip("-n", self.switch, "link", "set", port, "master", "pqbr")
        ip("-n", self.switch, "link", "set", port, "up")
        addresses = []
        for _ in range(n_addresses):
            addresses.append(f"{SUBNET}.{self._next}")
            ip("-n", netns, "addr", "add", f"{addresses[-1]}/24", "dev", "eth0")
            self._next += 1
        ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name, netns, tuple(addresses), port)
        self.hosts[name] = host
        return host

    def argv(self, host: str, argv: list[str], hide: tuple[str, ...] = ()) -> list[str]:
        """`argv` run on `host`: in its namespace, with its own host name (so heartbeats tell
        hosts apart) and, for each path in `hide`, an empty file system mounted over it (the
        host does not share that directory)."""
        h = self.hosts[host]
        script = "".join(f'mount -t tmpfs pqempty "{path}" && ' for path in hide)
        return ["ip", "netns", "exec", h.netns, "unshare", "--uts", "sh", "-c",
                script + 'hostname "$0" && exec "$@"', f"pq-{host}", *argv]

    def cut(self, host: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def restore(self, host: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[host].port, "up")

    def partition(self, host: str, address: str) -> None:
        ip("-n", self.hosts[host].netns, "route", "add", f"{address}/32", "via", SINK)

    def heal(self, host: str, address: str) -> None:
        ip("-n", self.hosts[host].netns, "route", "del", f"{address}/32", "via", SINK)

    def pids(self, host: str) -> list[int]:
        """Every process in `host`'s namespace."""
        return [int(p) for p in ip("netns", "pids", self.hosts[host].netns, check=False).split()]

    @contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run the calling thread in `host`'s namespace for the block (sockets it opens stay
        there). Other threads are not moved."""
        with open(f"/proc/self/task/{threading.get_native_id()}/ns/net") as home, \
                open(f"/run/netns/{self.hosts[host].netns}") as there:
            _setns(there.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def enter(self, host: str) -> None:
        """Move the calling thread (and the threads and processes it starts later) into
        `host`'s namespace until `close()`."""
        if self._home is None:
            self._home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net",
                                 os.O_RDONLY)
        with open(f"/run/netns/{self.hosts[host].netns}") as there:
            _setns(there.fileno())

    def close(self) -> None:
        """Kill what runs on the hosts, delete every namespace (and so every link)."""
        if self._closed:
            return
        self._closed = True
        if self._home is not None:
            _setns(self._home)
            os.close(self._home)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = False
            for netns in self._namespaces:
                for pid in ip("netns", "pids", netns, check=False).split():
                    if int(pid) == os.getpid():
                        continue
                    alive = True
                    with suppress(ProcessLookupError):
                        os.kill(int(pid), sig)
            if not alive:
                break
            time.sleep(1.0)
        for netns in reversed(self._namespaces):
            ip("netns", "del", netns, check=False)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
