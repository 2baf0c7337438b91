"""Workers predict an upload's chunks while it still arrives; a bad row found later still
refuses the upload with 400 naming it, and discards the job and the work done on it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from service.core.settings import Settings
from service.models.registry import ModelInfo
from service.store.db import job_chunks, jobs
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant, make_tenant

HEADER = b"sepal_length,sepal_width,petal_length,petal_width\n"
# The test server (werkzeug's) fills each read of a chunked body before it returns, so the first
# part sent is larger than the parser's first read (64 KiB); gunicorn returns what has come
# (tests/faults/test_bulk_resume.py).


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=100, bulk_window=2))
    yield live
    live.stop()


@pytest.fixture
def client(engine: Engine, server: LiveServer, models: dict[str, ModelInfo]
           ) -> Iterator[Tenant]:
    yield from make_tenant(engine, server.url)


def open_upload(client: Tenant) -> socket.socket:
    host, port = client.base_url.rsplit("/", 1)[-1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall((f"POST /v1/jobs?model=iris HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {client.key}\r\nContent-Type: text/csv\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n").encode())
    return sock


def send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    sock.sendall(b"0\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def rows_done(engine: Engine, tenant: str) -> tuple[int, int, bool] | None:
    with engine.connect() as conn:
        row = conn.execute(select(jobs.c.rows_done, jobs.c.n_rows, jobs.c.uploading)
                           .where(jobs.c.tenant == tenant)).first()
    return None if row is None else (row.rows_done, row.n_rows, row.uploading)


def test_workers_predict_the_first_chunks_while_the_upload_goes_on(
    client: Tenant, engine: Engine, worker: object
) -> None:
    sock = open_upload(client)
    try:
        send(sock, HEADER + b"5.1,3.5,1.4,0.2\n" * 5000)  # more than a first read
        deadline = time.monotonic() + 60
        while not (state := rows_done(engine, client.name)) or state[0] < 300:
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state[2] is True  # predicted while still uploading: the job cannot end yet
        send(sock, b"6.7,3.0,5.2,2.3\n" * 500)
        status, body = answer(sock)
    finally:
        sock.close()
    assert status == 202, body
    done = client.wait(str(body["id"]), timeout=60)
    assert done["status"] == "succeeded" and done["rows_total"] == done["rows_done"] == 5500
    predictions = client.get(f"/v1/jobs/{body['id']}/result").json()["predictions"]
    assert predictions == ["setosa"] * 5000 + ["virginica"] * 500


def test_a_bad_row_after_predicted_chunks_refuses_the_upload_and_discards_the_job(
    client: Tenant, engine: Engine, worker: object
) -> None:
    sock = open_upload(client)
    try:
        send(sock, HEADER + b"5.1,3.5,1.4,0.2\n" * 5000)  # more than a first read
        deadline = time.monotonic() + 60
        while not (state := rows_done(engine, client.name)) or state[0] < 300:
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        job_id = None
        with engine.connect() as conn:
            job_id = conn.execute(select(jobs.c.id).where(jobs.c.tenant == client.name)
                                  ).scalar_one()
        send(sock, b"5.1,3.5,1.4,0.2\n" * 250 + b"5.1,oops,1.4,0.2\n")
        status, body = answer(sock)
    finally:
        sock.close()
    assert status == 400
    error = body["error"]
    assert isinstance(error, dict) and error["field"] == "row 5251", error
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs).where(
            jobs.c.tenant == client.name)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(job_chunks).where(
            job_chunks.c.job_id == job_id)).scalar_one() == 0
