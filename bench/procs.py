"""Start/stop subprocess trees, wait for HTTP readiness, sample their peak RSS and CPU seconds."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import IO

import psutil


@dataclass
class Proc:
    """One started subprocess (its own session / process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: str
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


def start(
    name: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    log_dir: str = "/tmp",
) -> Proc:
    """Start argv in a new process group (env merged over os.environ).

    Output goes to LOG_DIR/NAME.log.
    """
    log_path = os.path.join(log_dir, f"{name}.log")
    # Stays open for the life of the process; closed by stop().
    log = open(log_path, "wb")  # noqa: SIM115
    full_env = {**os.environ, **(env or {})}
    popen = subprocess.Popen(
        argv,
        env=full_env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    return Proc(name, popen, log_path, log)


def stop(proc: Proc, grace_s: float = 8.0) -> None:
    """SIGTERM the process group, then SIGKILL it after grace_s; never raises for gone processes."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.popen.wait(timeout=wait_s)
            # The leader is gone; make sure nothing else in its group survives.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.log.close()


def tail(proc: Proc, n_bytes: int = 3000) -> str:
    """Last n_bytes of the process log (for error messages)."""
    try:
        with open(proc.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_http(
    host: str, port: int, path: str = "/", timeout_s: float = 30.0, procs: list[Proc] | None = None
) -> None:
    """Poll until an HTTP GET on host:port answers (any status).

    Raises on timeout or if a proc exits.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs or []:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{tail(p)}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"http://{host}:{port}{path} not answering after {timeout_s}s")


def wait_log(proc: Proc, needle: str, timeout_s: float = 30.0) -> None:
    """Wait until the process log contains needle (e.g. celery's 'ready.').

    Raises on exit or timeout.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in tail(proc, 20000):
            return
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail(proc)}")
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name}: {needle!r} not in log after {timeout_s}s:\n{tail(proc)}")


@dataclass
class _TreeStats:
    peak_rss: int = 0
    cpu_by_pid: dict[tuple[int, float], float] = field(default_factory=dict)


class TreeSampler:
    """Background thread sampling RSS and CPU of process trees.

    RSS is summed over the tree; user+sys CPU is kept for each process ever seen.

    CPU of a process is its last sampled value, so processes that live and die between two samples
    are missed (gunicorn/celery children live for the whole run); members are re-listed every
    refresh_every samples because listing a tree scans all of /proc.
    """

    def __init__(self, procs: list[Proc], interval_s: float = 0.2, refresh_every: int = 5) -> None:
        self.procs = procs
        self.interval_s = interval_s
        self.refresh_every = refresh_every  # re-list tree members every N samples (it is costly)
        self.stats: dict[str, _TreeStats] = {p.name: _TreeStats() for p in procs}
        self._members: dict[str, list[psutil.Process]] = {}
        self._ticks = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self.sample(refresh=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._ticks += 1
            self.sample(refresh=self._ticks % self.refresh_every == 0)

    def _tree(self, proc: Proc, refresh: bool) -> list[psutil.Process]:
        """Members of proc's tree, re-listed only when refresh is set (or never listed)."""
        if refresh or proc.name not in self._members:
            try:
                root = psutil.Process(proc.pid)
                self._members[proc.name] = [root, *root.children(recursive=True)]
            except psutil.Error:
                self._members[proc.name] = []
        return self._members[proc.name]

    def sample(self, refresh: bool = False) -> None:
        """Take one sample of every tree now (re-listing members when refresh is set)."""
        for p in self.procs:
            rss = 0
            with self._lock:
                st = self.stats[p.name]
                for m in self._tree(p, refresh):
                    try:
                        with m.oneshot():
                            mem = m.memory_info().rss
                            t = m.cpu_times()
                    except psutil.Error:
                        continue
                    rss += mem
                    st.cpu_by_pid[(m.pid, m.create_time())] = t.user + t.system
                st.peak_rss = max(st.peak_rss, rss)

    def cpu_seconds(self, name: str | None = None) -> float:
        """User+sys CPU seconds so far of one tree (or all trees), after taking a fresh sample."""
        self.sample(refresh=True)
        with self._lock:
            names = [name] if name else list(self.stats)
            return sum(sum(self.stats[n].cpu_by_pid.values()) for n in names)

    def reset_peak(self) -> None:
        """Forget peak RSS so far (e.g. to measure only the load phase)."""
        with self._lock:
            for st in self.stats.values():
                st.peak_rss = 0

    def peak_rss_mb(self, name: str) -> float:
        """Peak summed RSS of one tree in MiB."""
        with self._lock:
            return round(self.stats[name].peak_rss / 2**20, 1)


class ProcSet:
    """Context manager owning started processes.

    Every group is killed on exit, even on exceptions.
    """

    def __init__(self, log_dir: str = "/tmp") -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None
    ) -> Proc:
        """Start one process (see start()) and take ownership of it."""
        proc = start(name, argv, env, cwd, self.log_dir)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> ProcSet:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            stop(p)


def wait_quiet(max_busy_pct: float = 15.0, timeout_s: float = 60.0, window_s: float = 1.0) -> float:
    """Wait (bounded) until machine-wide CPU use over window_s is below max_busy_pct.

    Returns the last measured %.
    """
    deadline = time.monotonic() + timeout_s
    busy = float(psutil.cpu_percent(interval=window_s))
    while busy >= max_busy_pct and time.monotonic() < deadline:
        busy = float(psutil.cpu_percent(interval=window_s))
    return busy
