"""The highly available data tier of `make cluster` (tests/support/cluster.py), on hosts of a
`netns.Network`: a Redis primary and replica on `redis1` and `redis2` with a sentinel on each
and a third on `lb`, and a PostgreSQL primary on `pg1` with a synchronous standby on `pg2`.

What a host's death does to each, and what is done about it. Redis: Sentinel promotes the
replica by itself; the dead host is replaced by a replica of the new master. PostgreSQL: the
steps of the operator's runbook in docs/production.md ("PostgreSQL failover"), one function
each, in its order: see the primary is gone, fence it, promote the standby, make the new
primary stop waiting for a standby it does not have, rebuild the old primary as its standby.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, select

from bench.procs import Proc, ProcSet
from service.cli.embedded import redis_binary
from service.core import times
from service.store.db import jobs
from service.store.redisclient import redis_client
from tests.support import netns, pgserver

SERVICE = "predq"
REDIS_HOSTS = ("redis1", "redis2")
SENTINEL_HOSTS = ("redis1", "redis2", "lb")
PG_HOSTS = ("pg1", "pg2")
REDIS_PORT, SENTINEL_PORT, PG_PORT = 6379, 26379, 5432
DOWN_AFTER_MS = 2000  # a master silent this long is down (loaded 2-core machine: not less)


class RedisGroup:
    """Redis on REDIS_HOSTS, watched by sentinels on SENTINEL_HOSTS; `url` is REDIS_URL."""

    def __init__(self, net: netns.Network, procs: ProcSet, workdir: Path) -> None:
        self.net, self.procs, self.workdir = net, procs, workdir
        self.running: dict[str, list[Proc]] = {h: [] for h in SENTINEL_HOSTS}
        self.started = 0

    @property
    def url(self) -> str:
        hosts = ",".join(f"{self.net.hosts[h].address}:{SENTINEL_PORT}" for h in SENTINEL_HOSTS)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> None:
        first, second = REDIS_HOSTS
        self._server(first)
        self._server(second, replica_of=first)
        until(lambda: self.server(second).info("replication")["master_link_status"] == "up",
              20, "the Redis replica to sync")
        for host in SENTINEL_HOSTS:
            self._sentinel(host, monitor=first)
        until(self._watched, 30, "the sentinels to see each other and the replica")

    def _run(self, host: str, what: str, argv: list[str]) -> None:
        self.started += 1
        proc = self.procs.start(f"{host}-{what}-{self.started}", self.net.argv(host, argv))
        self.running[host].append(proc)

    def _server(self, host: str, replica_of: str | None = None) -> None:
        argv = [redis_binary(), "--bind", self.net.hosts[host].address, "--port",
                str(REDIS_PORT), "--protected-mode", "no", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0", "--dir", str(self._home(host))]
        if replica_of is not None:
            argv += ["--replicaof", self.net.hosts[replica_of].address, str(REDIS_PORT)]
        self._run(host, "redis", argv)
        until(lambda: self.server(host).ping(), 10, f"Redis on {host}")

    def _home(self, host: str) -> Path:
        """The host's own directory (a replica keeps the master's snapshot there)."""
        home = self.workdir / host
        home.mkdir(exist_ok=True)
        return home

    def _sentinel(self, host: str, monitor: str) -> None:
        config = self._home(host) / "sentinel.conf"
        if not config.exists():  # a restarted sentinel keeps what it learnt
            config.write_text(
                f"port {SENTINEL_PORT}\nbind {self.net.hosts[host].address}\n"
                f"protected-mode no\ndir {self._home(host)}\n"
                f"sentinel monitor {SERVICE} {self.net.hosts[monitor].address} {REDIS_PORT} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n")
        self._run(host, "sentinel", [redis_binary(), str(config), "--sentinel"])

    def server(self, host: str) -> redis.Redis:
        return redis.Redis(self.net.hosts[host].address, REDIS_PORT, socket_timeout=2,
                           socket_connect_timeout=2)

    def sentinel(self, host: str) -> redis.Redis:
        return redis.Redis(self.net.hosts[host].address, SENTINEL_PORT, socket_timeout=1,
                           socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))

    def _watched(self) -> bool:
        return all(self.sentinel(h).sentinel_master(SERVICE)["num-slaves"] >= 1
                   and self.sentinel(h).sentinel_master(SERVICE)["num-other-sentinels"] >= 2
                   for h in SENTINEL_HOSTS)

    def master(self) -> str:
        """The host the sentinels that answer report as the master."""
        for host in SENTINEL_HOSTS:
            try:
                address = self.sentinel(host).sentinel_get_master_addr_by_name(SERVICE)[0]
            except redis.RedisError:
                continue
            if isinstance(address, bytes):
                address = address.decode()
            return next(h for h in REDIS_HOSTS if self.net.hosts[h].address == address)
        raise RuntimeError("no sentinel answers")

    def client(self) -> redis.Redis:
        """A client of the master, whichever it is (predq's own factory)."""
        return redis_client(self.url, timeout=5)

    def replica_unacked_bytes(self) -> int:
        """Bytes of the master's stream its replica has not acknowledged (a replica acknowledges
        once a second: what Redis may lose at a failover is up to about this much)."""
        info = self.server(self.master()).info("replication")
        offsets = [int(v["offset"]) for k, v in info.items() if k.startswith("slave")
                   and isinstance(v, dict)]
        return int(info["master_repl_offset"]) - min(offsets, default=0)

    def kill_host(self, host: str) -> None:
        """The host dies: its Redis and its sentinel are SIGKILLed and its link is cut (no
        FIN, no RST reach anyone: the clients' sockets to it go silent)."""
        self.net.cut(host)
        for proc in self.running[host]:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait(10)
        self.running[host] = []

    def lose_master(self) -> Failover:
        """The master's host dies (`kill_host`), and Sentinel promotes the replica."""
        host, behind = self.master(), self.replica_unacked_bytes()
        self.kill_host(host)
        died = times.utcnow()
        until(lambda: self.master() != host, 60, "Sentinel to promote the replica")
        return Failover("Redis", host, died, times.utcnow(), behind)

    def replace_host(self, host: str) -> None:
        """A new machine in the dead host's place: its link up, its Redis a replica of the
        current master (never a master: it holds nothing), its sentinel back."""
        self.net.restore(host)
        self._server(host, replica_of=self.master())
        self._sentinel(host, monitor=self.master())
        until(lambda: self.server(host).info("replication")["master_link_status"] == "up",
              60, f"the new replica on {host} to sync")


class PostgresPair:
    """A PostgreSQL primary and its synchronous standby on PG_HOSTS; `url` names both."""

    def __init__(self, net: netns.Network) -> None:
        self.net = net
        self.servers: dict[str, pgserver.PrivatePostgres] = {}
        self.primary, self.standby = PG_HOSTS

    def _make(self, host: str, standby_of: pgserver.PrivatePostgres | None = None,
              ) -> pgserver.PrivatePostgres:
        h = self.net.hosts[host]
        server = pgserver.PrivatePostgres(h.address, PG_PORT, ("ip", "netns", "exec", h.netns),
                                          standby_of=standby_of)
        server.start("max_connections=200")
        self.servers[host] = server
        return server

    @property
    def url(self) -> str:
        return pgserver.multi_host_url(*(self.servers[h] for h in PG_HOSTS))

    def start(self) -> None:
        primary = self._make(self.primary)
        self._make(self.standby, standby_of=primary)
        primary.require_synchronous_standby()

    def kill_host(self, host: str) -> None:
        """The primary's host dies: every PostgreSQL process SIGKILLed, its link cut."""
        self.net.cut(host)
        self.servers[host].kill()

    def lose_primary(self) -> Failover:
        """The primary's host dies (`kill_host`), and the runbook's steps 1 to 4 run."""
        host = self.primary
        self.kill_host(host)
        died = times.utcnow()
        self.wait_primary_gone()
        self.fence()
        self.promote()
        return Failover("PostgreSQL", host, died, times.utcnow())

    # -- the runbook (docs/production.md, "PostgreSQL failover: the runbook") -------------
    def wait_primary_gone(self, checks: int = 2, timeout: float = 60) -> None:
        """1. The primary is gone: `pg_isready` gets no answer `checks` times in a row."""
        server, failed, deadline = self.servers[self.primary], 0, time.monotonic() + timeout
        while failed < checks:
            assert time.monotonic() < deadline, "the primary never looked down"
            ready = subprocess.run([f"{pgserver.BIN[-1]}/pg_isready", "-h", server.address,
                                    "-p", str(PG_PORT), "-t", "1"], capture_output=True)
            failed = failed + 1 if ready.returncode != 0 else 0
            time.sleep(0.25)

    def fence(self) -> None:
        """2. It cannot come back as a primary: no process of it runs (in production: power
        its machine off, or stop its PostgreSQL and keep it from starting)."""
        self.servers[self.primary].kill()

    def promote(self) -> None:
        """3. and 4. Promote the standby (a synchronous standby has every acknowledged commit),
        then let it commit without a standby: it has none until step 6. (Step 5 is predq's:
        nothing to do, every process finds the new primary through DATABASE_URL.)"""
        server = self.servers[self.standby]
        server.promote()
        server.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
        server.sql("SELECT pg_reload_conf()")
        self.primary, self.standby = self.standby, self.primary

    def rebuild_standby(self) -> None:
        """6. The old primary's host comes back as the new primary's standby (a fresh copy by
        pg_basebackup: its own data may hold WAL the new primary never had), and the new
        primary waits for it again."""
        host = self.standby
        self.net.restore(host)
        self.servers[host].remove()
        self._make(host, standby_of=self.servers[self.primary])
        self.servers[self.primary].require_synchronous_standby()

    def close(self) -> None:
        for server in self.servers.values():
            server.remove()


@dataclass
class Failover:
    """A primary's death and its replacement, for the figures of `make cluster`."""

    store: str  # Redis | PostgreSQL
    host: str
    died: datetime  # UTC, as the database writes times
    replaced: datetime  # a new primary took writes (Sentinel reported it; promote returned)
    replica_unacked_bytes: int = 0  # Redis: the stream its replica had not acknowledged

    def recovery_s(self, engine: Engine) -> float | None:
        """Seconds from the death until every job submitted while the primary was gone, and
        the first one submitted after it was replaced, had finished (None: one never did)."""
        with engine.connect() as conn:
            rows = conn.execute(select(jobs.c.created_at, jobs.c.finished_at)
                                .where(jobs.c.created_at >= self.died)
                                .order_by(jobs.c.created_at)).all()
        during = [r for r in rows if times.as_utc(r.created_at) <= self.replaced]
        after = [r for r in rows if times.as_utc(r.created_at) > self.replaced][:1]
        if not after or any(r.finished_at is None for r in during + after):
            return None
        last = max(times.as_utc(r.finished_at) for r in during + after)
        return round((last - self.died).total_seconds(), 1)


def until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until `check()` is true (an exception counts as not yet), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.2)
