"""Real processes and servers for the tests: the Flask app over HTTP in a thread, `predq api`
(gunicorn) and `celery worker` subprocesses, free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import BaseWSGIServer, make_server

from service.api import create_app
from service.cli.processes import (
    DEFAULT_QUEUES,
    api_command,
    chunk_worker_command,
    deliverer_command,
    stop_all,
    worker_command,
)
from service.core.messaging import CHUNK_LANES, CHUNK_SHADOW_QUEUE
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The Flask app served over real HTTP on an ephemeral port, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.app.extensions["predq"].waiter.close()
        self.app.extensions["predq"].engine.dispose()


class ApiProcess:
    """A real `predq api` (gunicorn) subprocess with the given settings, answering on
    `self.url` once constructed; its output goes to `log_path`."""

    def __init__(self, settings: Settings, log_path: Path, timeout: float = 60,
                 env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, *api_command(settings)], env=env,
                                         cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.url = f"http://127.0.0.1:{settings.port}"
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                log_path.read_text()[-3000:]
            time.sleep(0.1)

    def stop(self) -> None:
        stop_all([self.proc], grace=30)


def answers(url: str) -> bool:
    """The server at `url` answers /healthz (not listening yet, or still loading: False)."""
    try:
        return requests.get(url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


class WorkerProcess:
    """A real `celery worker` subprocess with the test settings."""

    def __init__(self, settings: Settings, log_path: Path, deliverer: bool = False,
                 queues: str | None = None, chunks: bool = False) -> None:
        """A worker of every predict queue and bulk chunks alike (the tests' default: one
        process tree on a 2-core machine); `chunks`: a bulk chunk worker as production runs
        it beside a worker of `queues` (its prefetch of 1, its lower CPU priority)."""
        env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        if deliverer:
            command = deliverer_command(settings)
        elif chunks:
            command = chunk_worker_command(settings.replace(bulk_concurrency=2))
        else:
            command = worker_command(settings.replace(worker_concurrency=2),
                                     queues or ",".join((DEFAULT_QUEUES, *CHUNK_LANES,
                                                         CHUNK_SHADOW_QUEUE)))
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while b"ready." not in log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_all([self.proc], grace=20)
        self.log.close()
