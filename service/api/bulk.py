"""POST /v1/jobs with a CSV, NDJSON, .npy or Parquet body: a bulk job, options in the query."""

from __future__ import annotations

import hashlib
import io
from typing import IO, Any

from flask import request

from service.api import services
from service.bulk import intake
from service.bulk.formats import Format
from service.jobs import idempotency
from service.jobs.requests import Options
from service.jobs.submit import Accepted
from service.ops import logs


class HashingReader(io.RawIOBase):
    """The request stream, hashed as it is read when the request has an Idempotency-Key (its
    fingerprint covers the body); wrap it in io.BufferedReader for the parsers. Without a key
    nothing is hashed (sha256 of a 152 MB body is ~0.09 s of CPU, 7 % of the API's share of
    the upload)."""

    def __init__(self, stream: IO[bytes], hashing: bool = True) -> None:
        super().__init__()
        self._stream = stream
        self._digest = hashlib.sha256() if hashing else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        if self._digest is not None:
            self._digest.update(data)
        buffer[:len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        assert self._digest is not None, "made with hashing=False"
        return self._digest.hexdigest()


def submit_bulk(tenant: str, fmt: Format) -> Accepted:
    """Check the query, then stream the body through the one submit."""
    svc = services()
    given = Options.from_query(request.args, request.headers.get(idempotency.HEADER))
    req = svc.submitter.requests.build(tenant, given, default_priority="bulk",
                                       request_id=logs.request_id.get())
    request.max_content_length = svc.settings.max_upload_bytes
    raw = HashingReader(request.stream, hashing=req.key is not None)
    stream = io.BufferedReader(raw, 1 << 16)
    args = request.args

    def fingerprint() -> str:
        while not stream.closed and stream.read(1 << 16):  # a replay: hash its whole body
            pass  # (after parsing, the reader has read it to the end, and may have closed it)
        return idempotency.fingerprint("POST /v1/jobs bulk", sorted(args.items(multi=True)),
                                       raw.hexdigest())

    return intake.submit_stream(svc.submitter, svc.settings, req, fmt, stream, fingerprint)
