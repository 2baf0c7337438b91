"""Workers predict an upload's chunks while it still arrives; a bad row found later still
refuses the upload with 400 naming it, and discards the job and the work done on it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, func, select

from service.core.settings import Settings
from service.store.db import job_chunks, jobs
from tests.support.processes import LiveServer
from tests.support.tenants import Tenant

HEADER = b"sepal_length,sepal_width,petal_length,petal_width\n"
# The test server (werkzeug's) fills each read of a chunked body before it returns, so the first
# part sent is larger than the parser's first read (64 KiB); gunicorn returns what has come
# (tests/faults/test_bulk_resume.py).


@pytest.fixture(scope="module")
def server(settings: Settings, engine: Engine) -> Iterator[LiveServer]:
    live = LiveServer(settings.replace(bulk_chunk_rows=100, bulk_window=2))
    yield live
    live.stop()


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


def predicting_while_uploading(client: Tenant, engine: Engine, sock: socket.socket) -> str:
    """Send 5,000 rows of an upload and wait until workers have predicted 300 of them while
    it still arrives; return the job's id."""
    send(sock, HEADER + b"5.1,3.5,1.4,0.2\n" * 5000)  # more than a first read
    query = select(jobs.c.id, jobs.c.rows_done, jobs.c.uploading).where(
        jobs.c.tenant == client.name)
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            job = conn.execute(query).first()
        if job is not None and job.rows_done >= 300:
            assert job.uploading  # predicted while still uploading: the job cannot end yet
            return str(job.id)
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_workers_predict_the_first_chunks_while_the_upload_goes_on(
    client: Tenant, engine: Engine, worker: object
) -> None:
    sock = open_upload(client)
    try:
        predicting_while_uploading(client, engine, sock)
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
        job_id = predicting_while_uploading(client, engine, sock)
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


def test_each_chunk_of_an_upload_is_seen_only_once_its_transaction_commits(
    settings: Settings, engine: Engine, tenant: Tenant, worker: object
) -> None:
    """A chunk committed apart from the end of its upload could be sent and predicted while the
    job still read as uploading: its rows done, nothing would ever end the job (seen once in
    CI, the job `running` with every row done). Each chunk the API stores stays out of sight
    of every other connection (a worker's) until the transaction storing it commits."""
    from service.api import create_app

    app = create_app(settings.replace(bulk_chunk_rows=100))
    api_engine = app.extensions["predq"].engine
    owned = select(jobs.c.id).where(jobs.c.tenant == tenant.name)
    seen: list[tuple[int, int]] = []  # (chunks the API had stored, chunks visible outside)

    def stored(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO JOB_CHUNKS"):
            with engine.connect() as outside:
                visible = outside.execute(select(func.count()).select_from(job_chunks).where(
                    job_chunks.c.job_id.in_(owned))).scalar_one()
            seen.append((len(seen) + 1, visible))

    event.listen(api_engine, "after_cursor_execute", stored)
    try:
        answer = app.test_client().post(
            "/v1/jobs?model=iris", data=HEADER + b"5.1,3.5,1.4,0.2\n" * 350,
            headers={"Authorization": f"Bearer {tenant.key}", "Content-Type": "text/csv"})
    finally:
        event.remove(api_engine, "after_cursor_execute", stored)
        api_engine.dispose()
    assert answer.status_code == 202, answer.get_json()
    # four chunks (the last one of 50 rows), each stored in its own transaction
    assert seen == [(1, 0), (2, 1), (3, 2), (4, 3)]
    done = tenant.wait(answer.get_json()["id"], timeout=60)
    assert done["status"] == "succeeded" and done["rows_done"] == 350
