"""PostgreSQL stopped under a running API: JSON 503s, /readyz names it, service resumes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from migrations.runner import upgrade
from service.cli import embedded
from service.cli.demo import register_demo_models
from service.core.settings import Settings
from service.store.db import make_engine
from service.tenants import keys
from tests.support import pgserver
from tests.support.processes import LiveServer, WorkerProcess


@pytest.fixture
def postgres() -> Iterator[pgserver.PrivatePostgres]:
    if not pgserver.available():
        pytest.skip("needs PostgreSQL server binaries and root (to run them as postgres)")
    pg = pgserver.PrivatePostgres()
    pg.start()
    yield pg
    pg.remove()


def _prepare(postgres: pgserver.PrivatePostgres, settings: Settings,
             tmp_path_factory: pytest.TempPathFactory, tenant: str,
             **overrides: object) -> tuple[Settings, str]:
    """Settings on the private cluster, migrated, with the demo models and a key for `tenant`."""
    private = settings.replace(database_url=postgres.url,
                               model_dir=str(tmp_path_factory.mktemp("pg-models")), **overrides)
    upgrade(private.database_url)
    engine = make_engine(private.database_url)
    with engine.begin() as conn:
        register_demo_models(conn, private.model_dir, tmp_path_factory.mktemp("pg-train"))
        key = keys.create_key(conn, tenant)
    engine.dispose()
    return private, key


def test_database_down_answers_503_json_and_the_api_recovers_when_it_is_back(
    postgres: pgserver.PrivatePostgres,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    private, key = _prepare(postgres, settings, tmp_path_factory, "pg-down")
    server = LiveServer(private)
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {key}"
    body = {"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]}
    try:
        accepted = http.post(server.url + "/v1/jobs", json=body, timeout=10)
        assert accepted.status_code == 202
        postgres.stop()
        for method, path in (("POST", "/v1/jobs"), ("GET", accepted.headers["Location"])):
            response = http.request(method, server.url + path, json=body, timeout=30)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
        ready = http.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unavailable")
        assert ready.json()["checks"]["redis"] == "ok"
        postgres.start()
        # The pool drops the dead connections on the first error; at most a few requests fail.
        deadline = time.monotonic() + 20
        while (status := http.post(server.url + "/v1/jobs", json=body, timeout=10).status_code) \
                != 202:
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.2)
        assert http.get(server.url + accepted.headers["Location"], timeout=10).json()["status"] \
            == "queued"
    finally:
        server.stop()


def test_workers_hand_messages_back_while_the_database_is_down_and_run_them_after(
    postgres: pgserver.PrivatePostgres,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("pg-redis")
    private, key = _prepare(postgres, settings, tmp_path_factory, "pg-worker",
                            republish_after=3600, redis_url=f"unix://{directory / 'redis.sock'}")
    redis_proc = embedded.start_redis(directory)
    server = LiveServer(private)
    worker = None
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {key}"
    try:
        ids = [http.post(server.url + "/v1/jobs", json={"model": "iris", "inputs": [[
            5.1, 3.5, 1.4, 0.2]]}, timeout=10).json()["id"] for _ in range(3)]
        postgres.stop()
        worker = WorkerProcess(private, directory / "worker.log")
        deadline = time.monotonic() + 60
        while "handing" not in worker.output():  # retried with back-off, then handed back
            assert time.monotonic() < deadline, worker.output()[-3000:]
            time.sleep(0.3)
        postgres.start()
        deadline = time.monotonic() + 60
        while True:
            jobs = [http.get(server.url + f"/v1/jobs/{i}", timeout=10) for i in ids]
            if all(j.status_code == 200 and j.json()["status"] == "succeeded" for j in jobs):
                break
            assert time.monotonic() < deadline, [j.text for j in jobs]
            time.sleep(0.3)
        assert {j.json()["attempts"] for j in jobs} == {1}  # no reconciler: the same messages
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        embedded.stop(redis_proc)
