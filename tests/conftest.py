"""Fixtures on real services: a private Redis, SQLite or PostgreSQL, real HTTP, a real worker.

TEST_DATABASE_URL (a PostgreSQL URL) runs the suite on a fresh database created for the run;
otherwise it runs on a SQLite file. TEST_REDIS_URL points at a Redis to use instead of a private
redis-server on a unix socket.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from migrations.runner import upgrade
from service.cli import embedded
from service.cli.demo import register_demo_models
from service.core.settings import Settings
from service.models.registry import ModelInfo, add_model, list_models
from service.store.db import (
    make_engine,
)
from tests.support.models import train_fragile
from tests.support.processes import LiveServer, WorkerProcess
from tests.support.rollouts import Versions, as_operator, registered_versions
from tests.support.sentinel import SentinelGroup
from tests.support.sleepy import train_sleepy
from tests.support.tenants import Tenant, make_tenant


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    directory = tmp_path_factory.mktemp("redis")
    proc = embedded.start_redis(directory)
    yield f"unix://{directory / 'redis.sock'}"
    embedded.stop(proc)


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A private Redis primary, replica and three sentinels that the test may fail over."""
    group = SentinelGroup(tmp_path)
    yield group
    group.close()


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
    (var / "data").mkdir()  # the data root of bulk jobs by reference
    return Settings.from_env(
        {}, database_url=database_url, redis_url=redis_url, var_dir=str(var),
        data_root=str(var / "data"),
        model_dir=str(var / "models"), batch_flush_interval=0.005, log_level="INFO",
        key_epoch_check_interval=0.0, secret_key=Fernet.generate_key().decode(),
    )


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    upgrade(settings.database_url)
    # Pre-ping: the tests' own engine (their inserts and reads, and in-process runners) once
    # found a pooled PostgreSQL connection closed with nothing in the server's log, and the
    # next test failed on it. The product's engines do not pre-ping (store.db.make_engine).
    eng = make_engine(settings.database_url, pool_pre_ping=True)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def models(engine: Engine, settings: Settings) -> dict[str, ModelInfo]:
    """The demo models plus `fragile` and `sleepy`, registered once for the session."""
    work = Path(settings.var_dir) / "train"
    with engine.begin() as conn:
        register_demo_models(conn, settings.model_dir, work)
        add_model(conn, settings.model_dir, str(train_fragile(work / "fragile.joblib")),
                  "fragile", "1")
        add_model(conn, settings.model_dir, str(train_sleepy(work / "sleepy.joblib")),
                  "sleepy", "1")
        return {info.name: info for info in list_models(conn)}


@pytest.fixture
def tenant(engine: Engine, api_url: str, models: dict[str, ModelInfo]) -> Iterator[Tenant]:
    yield from make_tenant(engine, api_url)


@pytest.fixture
def other_tenant(engine: Engine, api_url: str) -> Iterator[Tenant]:
    yield from make_tenant(engine, api_url)


@pytest.fixture
def versions(engine: Engine, settings: Settings, models: dict[str, ModelInfo]
             ) -> Iterator[Versions]:
    """A model of three versions under a fresh name, for rollouts (iris has one version, and
    a rollout left on it would move the rest of the session's jobs)."""
    with registered_versions(engine, settings) as made:
        yield made


@pytest.fixture
def ops(engine: Engine, api_url: str) -> Iterator[Tenant]:
    """An operator's key, as `predq keys create --scopes operator` makes it."""
    with as_operator(engine, api_url) as made:
        yield made


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


@pytest.fixture(scope="session")
def worker(settings: Settings, engine: Engine, models: dict[str, ModelInfo],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(settings, tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    proc.stop()
