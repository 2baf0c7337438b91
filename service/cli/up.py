"""`predq up`: Redis, migrations, demo models, a dev key, API and worker; Ctrl-C stops all."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

import redis

from migrations.runner import upgrade
from service.cli import composition, embedded
from service.cli.demo import register_demo_models
from service.cli.processes import (
    api_command,
    beat_command,
    chunk_worker_command,
    deliverer_command,
    start,
    stop_all,
    worker_command,
)
from service.core.errors import Unauthorized
from service.core.settings import Settings
from service.ops import heartbeats, metricsdir
from service.tenants import keys


def dev_secret_key(settings: Settings) -> str:
    """The key that seals webhook secrets: PREDQ_SECRET_KEY, or one kept in var/secret-key."""
    if settings.secret_key:
        return settings.secret_key
    from cryptography.fernet import Fernet

    path = Path(settings.var_dir) / "secret-key"
    if not path.exists():
        path.write_text(Fernet.generate_key().decode() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def dev_key(settings: Settings) -> str:
    """The development key kept in var/dev-api-key (mode 0600), created on first run."""
    path = Path(settings.var_dir) / "dev-api-key"
    engine = composition.engine(settings)
    if path.exists():
        key = path.read_text().strip()
        try:
            with engine.connect() as conn:
                keys.authenticate(conn, key)
            return key
        except Unauthorized:
            pass
    with engine.begin() as conn:
        key = keys.create_key(conn, "dev", keys.SCOPES)  # the laptop owner may do anything
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def run_all(settings: Settings, embedded_redis: bool) -> int:
    var = Path(settings.var_dir)
    var.mkdir(parents=True, exist_ok=True)
    lock = _lock(var)  # held until this process ends
    if lock is None:
        return 1
    if not _port_free(settings.host, settings.port):
        print(f"predq: port {settings.port} on {settings.host} is taken by another program; "
              f"choose another with PREDQ_PORT, e.g. PREDQ_PORT={settings.port + 1} make run",
              file=sys.stderr)
        return 1
    redis_proc = embedded.start_redis(var) if embedded_redis else None
    settings = settings.replace(secret_key=dev_secret_key(settings))
    if "PREDQ_LOG_FORMAT" not in os.environ:  # a person reads these lines
        settings = settings.replace(log_format="text")
    if "PREDQ_LOG_LEVEL" not in os.environ:  # the banner, then only warnings and errors
        settings = settings.replace(log_level="WARNING")
    children: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(settings.database_url)
        with composition.engine(settings).begin() as conn:
            register_demo_models(conn, settings.model_dir, var / "demo")
        key = dev_key(settings)
        env = {**os.environ, **settings.env(),
               **metricsdir.export(settings.metrics_dir, clean=True)}  # a fresh count
        # Each child gets its own session: Ctrl-C reaches only us, and each child's main
        # process then gets one SIGTERM. (A gthread gunicorn worker that receives SIGINT and
        # then its master's quit signal deadlocks inside ThreadPoolExecutor.shutdown.)
        children += start([api_command(settings), worker_command(settings),
                           chunk_worker_command(settings), deliverer_command(settings),
                           beat_command(settings)], env)
        _wait_until_serving(settings, children)
        _banner(settings, key)
        stopping: list[int] = []
        # Ctrl-C, a kill, or the terminal closing (SIGHUP): every child is stopped alike.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: stopping.append(signum))
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        if stopping:
            print("\nstopping...", file=sys.stderr)
            return 0
        print("a child process exited; stopping everything", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the children were up
        return 0
    finally:
        stop_all(children)
        if redis_proc is not None:
            embedded.stop(redis_proc)


def _lock(var: Path) -> IO[str] | None:
    """One `predq up` per var/ directory: a second one would share its socket and database."""
    handle = open(var / "up.lock", "a+")  # noqa: SIM115 - held open while we run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        print(f"predq: another `predq up` (pid {pid}) is running with {var}; stop it first "
              "(Ctrl-C in its terminal), or give this one its own PREDQ_VAR_DIR",
              file=sys.stderr)
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_until_serving(settings: Settings, children: list[subprocess.Popen[bytes]],
                        timeout: float = 60) -> None:
    """The banner's curl line must work the moment it is printed, and its job run at once:
    wait for /healthz, then for the worker's first heartbeat (it has booted and consumes)."""
    url = f"http://{settings.host}:{settings.port}/healthz"
    deadline = time.monotonic() + timeout
    client = composition.redis(settings, timeout=2)
    try:
        while time.monotonic() < deadline and all(child.poll() is None for child in children):
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200 and heartbeats.live_workers(client) > 0:
                        return
            except (OSError, redis.RedisError):
                pass
            time.sleep(0.1)
    finally:
        client.close()
    raise RuntimeError(f"the API did not answer on {url}, or no worker started")


def _banner(settings: Settings, key: str) -> None:
    url = f"http://{settings.host}:{settings.port}"
    print(f"""
predq is running at {url}   (Ctrl-C stops everything)
  result store: {settings.database_url}
  redis:        {settings.redis_url}
  API key:      {key}   (also in {Path(settings.var_dir) / 'dev-api-key'})
  webhooks to:  {_webhook_targets(settings)}

In another terminal, for `predq submit/status/result`:
  export PREDQ_URL={url} PREDQ_API_KEY={key}

Dashboard: {url}/#key={key}

Try it:
  curl -s -X POST {url}/v1/jobs -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}}'
  curl -s {url}/v1/jobs/JOB_ID/result -H 'Authorization: Bearer {key}'
""", flush=True)


def _webhook_targets(settings: Settings) -> str:
    """Where webhooks may go: public addresses, and the private ones the operator allowed (a
    receiver on this laptop needs PREDQ_WEBHOOK_ALLOW_HOSTS)."""
    allowed = settings.webhook_allow_hosts.strip()
    if allowed:
        return f"public addresses and {allowed} (PREDQ_WEBHOOK_ALLOW_HOSTS)"
    return ("public addresses only; PREDQ_WEBHOOK_ALLOW_HOSTS=127.0.0.1:9000 allows a "
            "receiver on this machine")
