"""Bulk jobs under faults: a worker killed mid-job costs only the chunks it held."""

from __future__ import annotations

import io
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable

import joblib
import numpy as np
from sqlalchemy import func, select, update

from service.core import times
from service.jobs import chunkstore, uploads
from service.jobs.requests import JobRequest
from service.models.registry import ModelInfo
from service.ops import metrics
from service.store.db import job_chunks, jobs
from tests.faults.conftest import Stack
from tests.support.processes import ApiProcess, free_port


def until(condition: Callable[[], bool], timeout: float, step: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        step()
        time.sleep(0.3)


def test_a_bulk_job_resumes_from_its_committed_chunks_after_sigkill(
    stack: Callable[..., Stack], models: dict[str, ModelInfo]
) -> None:
    s = stack(bulk_chunk_rows=100, bulk_window=2, lease_seconds=4,
              republish_after=0.5)
    s.start_worker()
    client = s.tenant()
    # 700 ms per chunk, two at a time: the job takes 4 s or more, room to kill it mid-way
    # on a busy machine.
    rows = np.column_stack([np.full(1200, 700.0), np.arange(1200.0)])
    body = io.BytesIO()
    np.save(body, rows)
    job_id = client.post("/v1/jobs?model=sleepy", data=body.getvalue(),
                         headers={"Content-Type": "application/x-npy"}).json()["id"]

    def progress() -> int:
        return int(client.get(f"/v1/jobs/{job_id}").json()["rows_done"])

    def holding() -> set[int]:
        with s.engine.connect() as conn:
            return {r.seq for r in conn.execute(select(job_chunks.c.seq).where(
                job_chunks.c.job_id == job_id, job_chunks.c.status == "running"))}

    # Kill while the worker holds a chunk: right after a chunk is written it may hold none.
    until(lambda: progress() >= 200 and bool(holding()), timeout=60, step=lambda: None)
    assert s.worker is not None
    os.killpg(s.worker.proc.pid, 9)  # mid-job, mid-chunk: no goodbye
    s.worker.proc.wait()
    killed_at = progress()
    assert 200 <= killed_at < 1200
    held = holding()  # claimed by the dead worker, never written
    assert held
    with s.engine.connect() as conn:
        before = {r.seq: (r.finished_at, r.attempts) for r in conn.execute(
            select(job_chunks).where(job_chunks.c.job_id == job_id,
                                     job_chunks.c.status == "done"))}
    s.start_worker()
    until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
          timeout=120, step=s.reconcile)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["rows_done"] == 1200 and job["percent"] == 100  # no chunk counted twice
    with s.engine.connect() as conn:
        after = {r.seq: (r.finished_at, r.attempts, r.inputs) for r in conn.execute(
            select(job_chunks).where(job_chunks.c.job_id == job_id))}
    assert sorted(after) == list(range(12))
    for seq, (finished_at, attempts) in before.items():  # committed chunks were not redone
        assert after[seq][:2] == (finished_at, attempts)
    assert all(after[seq][1] >= 2 for seq in held)  # the chunks it held ran again
    assert all(inputs is None for _, _, inputs in after.values())  # inputs dropped once done
    model = joblib.load(models["sleepy"].artifact_path)
    got = client.get(f"/v1/jobs/{job_id}/result").json()["predictions"]
    assert np.allclose(got, model.predict(rows))  # every row once, in input order


def test_the_chunks_of_an_upload_whose_api_was_killed_are_removed_and_counted(
    stack: Callable[..., Stack], models: dict[str, ModelInfo]
) -> None:
    """`predq api` is SIGKILLed in the middle of an upload: its job row, still `uploading`
    (workers predict an upload as it arrives), will never be finished. The reconciler deletes
    it and its chunks once no chunk came for `abandoned_upload_after`, and counts them; an
    upload still arriving, and chunks of one that has no job row yet, are left alone."""
    s = stack(bulk_chunk_rows=100, abandoned_upload_after=2.0)
    client = s.tenant()
    earlier = set(uploading(s))
    api = ApiProcess(s.settings.replace(port=free_port()), s.directory / "api.log")
    sock = socket.create_connection(("127.0.0.1", int(api.url.rsplit(":", 1)[1])), timeout=30)
    try:
        sock.sendall((f"POST /v1/jobs?model=iris HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {client.key}\r\nContent-Type: text/csv\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        part = b"sepal_length,sepal_width,petal_length,petal_width\n" + b"5.1,3.5,1.4,0.2\n" * 6000
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))  # and the rest never comes
        until(lambda: len(set(uploading(s)) - earlier) >= 1, timeout=30, step=lambda: None)
        time.sleep(1)  # more chunks go in
        os.killpg(api.proc.pid, signal.SIGKILL)  # mid-upload: the job row is never finished
        api.proc.wait(10)
    finally:
        sock.close()
    [killed] = [job_id for job_id in uploading(s) if job_id not in earlier]
    with s.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(job_chunks).where(
            job_chunks.c.job_id == killed)).scalar_one()
    assert stored >= 10  # chunks of 100 rows of the 6,000 sent
    young, orphan = str(uuid.uuid4()), str(uuid.uuid4())  # uploads still arriving elsewhere
    with s.engine.begin() as conn:
        uploads.add(conn, young, JobRequest(client.name, models["iris"]), 0, np.ones((3, 4)))
        chunkstore.add_chunk(conn, orphan, 0, np.ones((3, 4)))
    time.sleep(2.2)
    with s.engine.begin() as conn:  # ... and are younger than the limit when the sweep runs
        conn.execute(update(job_chunks).where(job_chunks.c.job_id.in_([young, orphan]))
                     .values(created_at=times.utcnow()))
    before = metrics.UPLOAD_CHUNKS_ABANDONED._value.get()
    assert s.reconcile()["abandoned_chunks"] >= stored
    assert metrics.UPLOAD_CHUNKS_ABANDONED._value.get() - before >= stored
    assert killed not in uploading(s) and young in uploading(s) and orphan in orphans(s)
    with s.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(job_chunks).where(
            job_chunks.c.job_id == killed)).scalar_one() == 0
    with s.engine.begin() as conn:
        uploads.discard(conn, young)
        chunkstore.discard(conn, [orphan])
    assert young not in uploading(s)


def uploading(s: Stack) -> list[str]:
    """Ids of jobs whose upload has not ended."""
    with s.engine.connect() as conn:
        return list(conn.execute(select(jobs.c.id).where(jobs.c.uploading.is_(True))).scalars())


def orphans(s: Stack) -> list[str]:
    """Job ids of stored chunks that belong to no job (one entry per chunk)."""
    with s.engine.connect() as conn:
        return list(conn.execute(select(job_chunks.c.job_id).where(
            job_chunks.c.job_id.not_in(select(jobs.c.id)))).scalars())
