"""An upload that workers predict while it still arrives.

The job row is committed with the upload's first chunk, marked `uploading`; each further chunk
commits with the job's row and chunk counts, and is sent as soon as the dispatch gives it a
slot (`dispatch`: fair share between tenants). The newest chunk is always held back: it is
stored in the upload's last transaction, which also takes the Idempotency-Key and clears
`uploading`, so whichever chunk finishes last finishes after that and ends the job (no chunk
of a job still uploading is its last). A
bad row, a quota or a lost key race deletes the job row and every chunk: workers' claims on
them then find nothing, and what they predicted is dropped. The reconciler deletes an upload
whose API died (no chunk for `abandoned_upload_after`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update

from service.core.times import utcnow
from service.jobs import chunkstore, idempotency
from service.jobs.idempotency import Claim
from service.jobs.requests import JobRequest
from service.models.modelinput import Batch
from service.store.db import job_chunks, jobs


def add(conn: Connection, job_id: str, req: JobRequest, seq: int, rows: Batch) -> None:
    """Store chunk `seq` of a job still uploading (its row made with chunk 0)."""
    if seq == 0:
        chunkstore.insert_job(conn, job_id, req, 0, 0, uploading=True)
    chunkstore.add_chunk(conn, job_id, seq, rows, req.model.schema)
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(
        n_rows=jobs.c.n_rows + len(rows), n_chunks=jobs.c.n_chunks + 1))


def end(conn: Connection, job_id: str, req: JobRequest, seq: int, rows: Batch,
        claim: Claim | None) -> bool:
    """Store the last chunk and end the upload; False if the Idempotency-Key belongs to
    another job (then the caller discards this one)."""
    if seq == 0:
        if not chunkstore.insert_job(conn, job_id, req, len(rows), 1, claim):
            return False
        chunkstore.add_chunk(conn, job_id, 0, rows, req.model.schema)
        return True
    if claim is not None and job_id not in idempotency.take(conn, [{
            "tenant": req.tenant, "key": claim.key, "fingerprint": claim.fingerprint,
            "job_id": job_id, "created_at": utcnow()}]):
        return False
    chunkstore.add_chunk(conn, job_id, seq, rows, req.model.schema)
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(
        n_rows=jobs.c.n_rows + len(rows), n_chunks=jobs.c.n_chunks + 1, uploading=False))
    return True


def discard(conn: Connection, job_id: str) -> None:
    """Forget an upload that failed: its chunks, and its job row if it is still uploading."""
    chunkstore.discard(conn, [job_id])
    conn.execute(delete(jobs).where(jobs.c.id == job_id, jobs.c.uploading.is_(True)))


def delete_abandoned(conn: Connection, older_than: datetime) -> int:
    """Delete uploads whose API died: jobs still uploading with no chunk stored since
    `older_than`; return how many chunks went with them."""
    newest = select(func.max(job_chunks.c.created_at)).where(
        job_chunks.c.job_id == jobs.c.id).scalar_subquery()
    stale = list(conn.execute(select(jobs.c.id).where(
        jobs.c.uploading.is_(True), func.coalesce(newest, jobs.c.created_at) < older_than)
    ).scalars())
    if not stale:
        return 0
    gone = chunkstore.discard(conn, stale)
    conn.execute(delete(jobs).where(jobs.c.id.in_(stale), jobs.c.uploading.is_(True)))
    return gone
