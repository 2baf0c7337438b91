"""A bulk job from a stream (an upload, a schedule's input file): its format's reader cuts it
into checked chunks of rows, and the one submit stores them and commits the job. Or from a
file under the data root, by reference: only its header is read here (`refs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from service.bulk import parsing, refs
from service.bulk.formats import Format
from service.core.errors import InvalidInput
from service.core.settings import Settings
from service.jobs.lifecycle import JobRequest
from service.jobs.submit import Accepted, Submitter


def submit_stream(submitter: Submitter, settings: Settings, req: JobRequest, fmt: Format,
                  stream: IO[bytes], fingerprint: Callable[[], str]) -> Accepted:
    """Submit the rows of `stream` as a bulk job; `fingerprint` (of the whole request, for
    its Idempotency-Key) is asked once the stream has been read."""
    if fmt.read is None:
        raise InvalidInput("inputs", f"{fmt.name} is not a bulk input format")
    if not fmt.available:
        raise InvalidInput("inputs", f"{fmt.name} needs {fmt.needs}, which this server lacks")
    bounds = parsing.Bounds(settings.bulk_chunk_rows, settings.max_bulk_rows,
                            settings.max_string_length)
    read: parsing.Reader = fmt.reader()
    return submitter.chunks(req, read(stream, req.model, bounds), fingerprint)


def submit_reference(submitter: Submitter, settings: Settings, req: JobRequest, given: object,
                     output: object, fingerprint: str) -> Accepted:
    """Submit the rows of the file `given` (relative to the data root) as a bulk job, its
    result to be written to `output` too (None: stored only)."""
    rows = max(settings.bulk_chunk_rows,
               min(settings.bulk_ref_chunk_rows, refs.CHUNK_BYTES // (8 * req.model.n_features)))
    bounds = parsing.Bounds(rows, settings.max_bulk_rows, settings.max_string_length)
    ref = refs.plan(settings.data_root, given, output, req.model, bounds)
    return submitter.reference(req, ref, fingerprint)
