"""Private PostgreSQL clusters that a test may stop, kill and promote (never the shared
server): a primary made by initdb, and standbys made from it by pg_basebackup, streaming."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile

import psutil

from tests.support.processes import free_port

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def available() -> bool:
    return bool(BIN) and shutil.which("runuser") is not None and os.geteuid() == 0


class PrivatePostgres:
    """A throwaway cluster (initdb in a temporary directory) that a test may stop and start."""

    def __init__(self, address: str = "127.0.0.1", port: int | None = None,
                 prefix: tuple[str, ...] = (), standby_of: PrivatePostgres | None = None,
                 ) -> None:
        """`address`: where it listens (another host's, for `make cluster`, which trusts
        that host's /24 too); `prefix`: what its commands run under (e.g. `ip netns exec`);
        `standby_of`: a primary to copy with pg_basebackup and stream from, instead of a
        new cluster."""
        self.dir = tempfile.mkdtemp(prefix="predq-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.address, self.prefix = address, prefix
        self.port = port or free_port()
        self.url = f"postgresql+psycopg://postgres@{address}:{self.port}/postgres"
        if standby_of is not None:
            self.copy(standby_of)
            return
        self._as_postgres("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres")
        if address != "127.0.0.1":
            network = address.rsplit(".", 1)[0] + ".0/24"
            with open(f"{self.dir}/data/pg_hba.conf", "a") as hba:
                hba.write(f"host all all {network} trust\nhost replication all {network} trust\n")

    def _as_postgres(self, tool: str, *args: str) -> str:
        done = subprocess.run([*self.prefix, "runuser", "-u", "postgres", "--",
                               f"{BIN[-1]}/{tool}", *args], capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def copy(self, primary: PrivatePostgres) -> None:
        """Become a standby of `primary`: its data by pg_basebackup, then its WAL streamed
        through a replication slot of the primary's (so that it keeps what this standby has
        not received)."""
        shutil.rmtree(f"{self.dir}/data", ignore_errors=True)
        self._as_postgres("pg_basebackup", "-h", primary.address, "-p", str(primary.port),
                          "-U", "postgres", "-D", f"{self.dir}/data", "-X", "stream", "-R",
                          "-c", "fast",
                          "-C", "-S", f"standby_{self.port}")

    def start(self, *settings: str) -> None:
        """Start the server; `settings` are more `name=value` server settings (-c)."""
        extra = "".join(f" -c {setting}" for setting in settings)
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "-l", f"{self.dir}/log",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses={self.address}"
                          + extra, "start")

    def sql(self, statement: str) -> str:
        """Run one statement through its unix socket (psql as postgres); its output."""
        return self._as_postgres("psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                                 "-X", "-A", "-t", "-c", statement).strip()

    def require_synchronous_standby(self, names: str = "*") -> None:
        """A commit returns once a standby of `names` has it on disk (synchronous_commit's
        default, on): no acknowledged commit exists on this server alone."""
        self.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
        self.sql("SELECT pg_reload_conf()")

    def promote(self) -> None:
        """The standby becomes a primary (pg_ctl promote waits until it takes writes)."""
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "promote")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash, nothing shut down cleanly."""
        try:
            with open(f"{self.dir}/data/postmaster.pid") as pidfile:
                postmaster = psutil.Process(int(pidfile.readline()))
        except (OSError, ValueError, psutil.NoSuchProcess):
            return
        for proc in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        subprocess.run([*self.prefix, "runuser", "-u", "postgres", "--", f"{BIN[-1]}/pg_ctl", "-D",
                        f"{self.dir}/data", "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def multi_host_url(*servers: PrivatePostgres) -> str:
    """One DATABASE_URL naming every server, for the one that takes writes."""
    hosts = "&".join(f"host={s.address}:{s.port}" for s in servers)
    return f"postgresql+psycopg://postgres@/postgres?{hosts}&target_session_attrs=read-write"
