"""A private Redis group behind Sentinel for the tests: a primary, a replica and three sentinels
(`redis-server --sentinel`), each its own process on a private port of 127.0.0.1. A test may
fail it over (SENTINEL FAILOVER) or kill its master; it never touches the shared Redis."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from service.cli.embedded import redis_binary
from tests.support.processes import free_port

SERVICE = "predq"
HOST = "127.0.0.1"


class SentinelGroup:
    """The group's processes under `directory`; `url` is its REDIS_URL."""

    def __init__(self, directory: Path, down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.start_server(self.ports[0])
        self.start_server(self.ports[1], replica_of=self.ports[0])
        wait_until(lambda: self.info(self.ports[1], "master_link_status") == "up",
                   "the replica to sync")
        for port in self.sentinel_ports:
            self._start_sentinel(port, down_after_ms)
        wait_until(self._sentinels_agree, "the sentinels to find each other and the replica")

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start_server(self, port: int, replica_of: int | None = None) -> None:
        """A redis-server on `port` that keeps nothing on disk (a replica of `replica_of`)."""
        self.procs[port] = start_server(self.directory, port, replica_of)

    def _start_sentinel(self, port: int, down_after_ms: int) -> None:
        config = self.directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind {HOST}\nprotected-mode no\ndir {self.directory}\n"
            f"logfile {self.directory / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {SERVICE} {HOST} {self.ports[0]} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n")
        self.procs[port] = subprocess.Popen(
            [redis_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.client(port).ping(), f"the sentinel on port {port}")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(HOST, port, socket_timeout=2, socket_connect_timeout=2)

    def info(self, port: int, field: str) -> str:
        return str(self.client(port).info("replication").get(field, ""))

    def master(self) -> int:
        """The master's port, as every sentinel reports it (they must agree)."""
        seen = {self.client(s).sentinel_get_master_addr_by_name(SERVICE)
                for s in self.sentinel_ports}
        assert len(seen) == 1, f"the sentinels disagree: {seen}"
        return int(seen.pop()[1])

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            state = self.client(port).sentinel_master(SERVICE)
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                return False
        return True

    def failover(self) -> int:
        """SENTINEL FAILOVER: the replica becomes the master and the master its replica,
        while clients stay connected to the old one. The new master's port, once the old
        master replicates from it (the group can fail over again)."""
        old = self.master()
        self.client(self.sentinel_ports[0]).execute_command("SENTINEL FAILOVER", SERVICE)
        wait_until(lambda: self.master() != old, "the sentinels to switch")
        new = self.master()
        wait_until(lambda: self.info(old, "role") == "slave"
                   and self.info(old, "master_link_status") == "up", "the old master to follow")
        return new

    def kill_master(self) -> int:
        """SIGKILL the master (what it had not replicated is lost with it); the port of the
        replica Sentinel promotes, once it has."""
        old = self.master()
        self.procs[old].kill()
        self.procs[old].wait()
        wait_until(lambda: self.master() != old, "Sentinel to promote the replica", timeout=30)
        return self.master()

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait()


def start_server(directory: Path, port: int, replica_of: int | None = None,
                 ) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:`port` that keeps nothing on disk (a replica of the one on
    `replica_of`), once it answers."""
    argv = [redis_binary(), "--port", str(port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--dir", str(directory),
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
            "--logfile", str(directory / f"redis-{port}.log")]
    if replica_of is not None:
        argv += ["--replicaof", HOST, str(replica_of)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_until(lambda: redis.Redis(HOST, port, socket_timeout=2).ping(),
               f"redis-server on port {port}")
    return proc


def wait_until(check: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Poll `check` until it is true (an exception counts as not yet), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, AssertionError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.1)
