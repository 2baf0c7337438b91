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

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="predq-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self._as_postgres("initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{BIN[-1]}/{tool}", *args],
                       check=True, capture_output=True, timeout=60)

    def start(self, *settings: str) -> None:
        """Start the server; `settings` are more `name=value` server settings (-c)."""
        extra = "".join(f" -c {setting}" for setting in settings)
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "-l", f"{self.dir}/log",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
                          + extra, "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", f"{self.dir}/data", "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{BIN[-1]}/pg_ctl", "-D",
                        f"{self.dir}/data", "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


