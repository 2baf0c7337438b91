"""A private PostgreSQL cluster that a test may stop and start (never the shared server)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

from tests.support.processes import free_port

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def available() -> bool:
    return bool(BIN) and shutil.which("runuser") is not None and os.geteuid() == 0


class PrivatePostgres:
    """A throwaway cluster (initdb in a temporary directory) that a test may stop and start."""

    def __init__(self, address: str = "127.0.0.1", port: int | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        """`address`: where it listens (another host's, for `make cluster`, which trusts
        that host's /24 too); `prefix`: what its commands run under (e.g. `ip netns exec`)."""
        self.dir = tempfile.mkdtemp(prefix="predq-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.address, self.prefix = address, prefix
        self.port = port or free_port()
        self._as_postgres("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres")
        if address != "127.0.0.1":
            network = address.rsplit(".", 1)[0] + ".0/24"
            with open(f"{self.dir}/data/pg_hba.conf", "a") as hba:
                hba.write(f"host all all {network} trust\n")
        self.url = f"postgresql+psycopg://postgres@{address}:{self.port}/postgres"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, "runuser", "-u", "postgres", "--", f"{BIN[-1]}/{tool}",
                        *args], check=True, capture_output=True, timeout=60)

    def start(self, *settings: str) -> None:
        """Start the server; `settings` are more `name=value` server settings (-c)."""
        extra = "".join(f" -c {setting}" for setting in settings)
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "-l", f"{self.dir}/log",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses={self.address}"
                          + extra, "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        subprocess.run([*self.prefix, "runuser", "-u", "postgres", "--", f"{BIN[-1]}/pg_ctl", "-D",
                        f"{self.dir}/data", "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


