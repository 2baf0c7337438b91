"""Fixtures on real services: a private Redis, SQLite or PostgreSQL, real HTTP, a real worker.

TEST_DATABASE_URL (a PostgreSQL URL) runs the suite on a fresh database created for the run;
otherwise it runs on a SQLite file. TEST_REDIS_URL points at a Redis to use instead of a private
redis-server on a unix socket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.engine import make_url
from werkzeug.serving import BaseWSGIServer, make_server

from service.api import create_app
from service.cli import embedded
from service.cli.demo import register_demo_models
from service.core.settings import Settings
from service.models.registry import ModelInfo, add_model, list_models
from service.store.db import (
    api_keys,
    jobs,
    make_engine,
    webhook_attempts,
    webhook_endpoints,
    webhook_events,
)
from service.store.migrate import upgrade
from service.tenants import keys
from tests.openapi_check import check_response
from tests.sleepy import train_sleepy

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    directory = tmp_path_factory.mktemp("redis")
    proc = embedded.start_redis(directory)
    yield f"unix://{directory / 'redis.sock'}"
    embedded.stop(proc)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        yield f"sqlite:///{tmp_path_factory.mktemp('sql') / 'predq.db'}"
        return
    name = f"predq_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
        ), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str,
             ) -> Settings:
    var = tmp_path_factory.mktemp("var")
    return Settings.from_env(
        {}, database_url=database_url, redis_url=redis_url, var_dir=str(var),
        model_dir=str(var / "models"), batch_flush_interval=0.005, log_level="INFO",
        key_epoch_check_interval=0.0, secret_key=Fernet.generate_key().decode(),
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    upgrade(settings.database_url)
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


def _train_fragile(path: Path) -> Path:
    """A classifier whose pipeline takes sqrt of the inputs: a negative value makes it raise."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    iris = load_iris()
    model = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=1000))
    model.fit(iris.data, iris.target)
    joblib.dump(model, path)
    return path


@pytest.fixture(scope="session")
def models(engine: Engine, settings: Settings) -> dict[str, ModelInfo]:
    """The demo models plus `fragile` and `sleepy`, registered once for the session."""
    work = Path(settings.var_dir) / "train"
    with engine.begin() as conn:
        register_demo_models(conn, settings.model_dir, work)
        add_model(conn, settings.model_dir, str(_train_fragile(work / "fragile.joblib")),
                  "fragile", "1")
        add_model(conn, settings.model_dir, str(train_sleepy(work / "sleepy.joblib")),
                  "sleepy", "1")
        return {info.name: info for info in list_models(conn)}


class Tenant:
    """A tenant with its own key, and an HTTP session that sends it."""

    def __init__(self, name: str, key: str, base_url: str) -> None:
        self.name, self.key, self.base_url = name, key, base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {key}"
        self.http.hooks["response"].append(check_response)  # every answer matches the spec

    def post(self, path: str, **kw: object) -> requests.Response:
        return self.http.post(self.base_url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object) -> requests.Response:
        return self.http.get(self.base_url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def delete(self, path: str, **kw: object) -> requests.Response:
        return self.http.delete(self.base_url + path, timeout=30, **kw)  # type: ignore[arg-type]

    def submit(self, model: str, inputs: list[object], **extra: object) -> str:
        response = self.post("/v1/jobs", json={"model": model, "inputs": inputs, **extra})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def wait(self, job_id: str, timeout: float = 30) -> dict[str, object]:
        """Poll until the job is final (the way a client would)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/v1/jobs/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                return job  # type: ignore[no-any-return]
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")


def make_tenant(engine: Engine, base_url: str,
                scopes: tuple[str, ...] = keys.DEFAULT_SCOPES) -> Iterator[Tenant]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        key = keys.create_key(conn, name, scopes)
    tenant = Tenant(name, key, base_url)
    yield tenant
    tenant.http.close()
    with engine.begin() as conn:
        events = select(webhook_events.c.id).where(webhook_events.c.tenant == name)
        conn.execute(delete(webhook_attempts).where(webhook_attempts.c.event_id.in_(events)))
        conn.execute(delete(webhook_events).where(webhook_events.c.tenant == name))
        conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.tenant == name))
        conn.execute(delete(jobs).where(jobs.c.tenant == name))
        conn.execute(delete(api_keys).where(api_keys.c.tenant == name))


@pytest.fixture
def tenant(engine: Engine, api_url: str, models: dict[str, ModelInfo]) -> Iterator[Tenant]:
    yield from make_tenant(engine, api_url)


@pytest.fixture
def other_tenant(engine: Engine, api_url: str) -> Iterator[Tenant]:
    yield from make_tenant(engine, api_url)


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


@pytest.fixture(scope="session")
def api_url(settings: Settings, engine: Engine) -> Iterator[str]:
    server = LiveServer(settings)
    yield server.url
    server.stop()


@pytest.fixture
def live_server() -> Iterator[type[LiveServer]]:
    """Start extra servers with other settings; each is stopped after the test."""
    started: list[LiveServer] = []

    class Tracked(LiveServer):
        def __init__(self, settings: Settings) -> None:
            super().__init__(settings)
            started.append(self)

    yield Tracked
    for server in started:
        server.stop()


class ApiProcess:
    """A real `predq api` (gunicorn) subprocess with the given settings, answering on
    `self.url` once constructed; its output goes to `log_path`."""

    def __init__(self, settings: Settings, log_path: Path, timeout: float = 60) -> None:
        from service.cli.processes import api_command

        env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}
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
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
        self.proc.wait(30)


def answers(url: str) -> bool:
    """The server at `url` answers /healthz (not listening yet, or still loading: False)."""
    try:
        return requests.get(url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


class WorkerProcess:
    """A real `celery worker` subprocess with the test settings."""

    def __init__(self, settings: Settings, log_path: Path, deliverer: bool = False,
                 queues: str | None = None) -> None:
        from service.cli.main import DEFAULT_QUEUES, deliverer_command, worker_command

        env = {**os.environ, **settings.env(), "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = (deliverer_command(settings) if deliverer
                   else worker_command(settings.replace(worker_concurrency=2),
                                       queues or DEFAULT_QUEUES))
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
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def worker(settings: Settings, engine: Engine, models: dict[str, ModelInfo],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(settings, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()
