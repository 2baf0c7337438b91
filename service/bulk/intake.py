"""A bulk job from a stream (an upload, a schedule's input file): its format's reader cuts it
into checked chunks of rows, and the one submit stores them and commits the job. Or from a
file under the data root, by reference: only its header is read here (`refs`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import IO

from service.bulk import formats, outputs, parsing, refs
from service.bulk.areas import Area
from service.bulk.formats import Format
from service.core.errors import InvalidInput
from service.core.settings import Settings
from service.jobs.requests import JobRequest
from service.jobs.submit import Accepted, Submitter
from service.jobs.typedresults import npy_dtype
from service.models.registry import ModelInfo


def submit_stream(submitter: Submitter, settings: Settings, req: JobRequest, fmt: Format,
                  stream: IO[bytes], fingerprint: Callable[[], str]) -> Accepted:
    """Submit the rows of `stream` as a bulk job; `fingerprint` (of the whole request, for
    its Idempotency-Key) is asked once the stream has been read."""
    if fmt.read is None:
        raise InvalidInput("inputs", f"{fmt.name} is not a bulk input format")
    if not fmt.available:
        raise InvalidInput("inputs", f"{fmt.name} needs {fmt.needs}, which this server lacks")
    rows = submitter.sizer.rows(req.model.id, settings.bulk_chunk_rows)
    bounds = parsing.Bounds(rows, settings.max_bulk_rows, settings.max_string_length,
                            settings.max_distinct_strings)
    read: parsing.Reader = fmt.reader(req.model.plain)
    req = replace(req, input_format=fmt.name)  # for the job page
    return submitter.chunks(req, read(stream, req.model, bounds), fingerprint)


def submit_reference(submitter: Submitter, settings: Settings, req: JobRequest, given: object,
                     output: object, fingerprint: str, overwrite: object = False,
                     area: Area | None = None) -> Accepted:
    """Submit the rows of the file `given` as a bulk job, its result to be written to
    `output` too (None: stored only). Both are in `area`: by default the tenant's own
    directory under the data root (and, to read, the prefixes shared with it)."""
    area = area or Area(settings.data_root, req.tenant, settings.shared_prefixes())
    most = max(settings.bulk_chunk_rows,
               min(settings.bulk_ref_chunk_rows, refs.CHUNK_BYTES // (8 * req.model.n_features)))
    rows = submitter.sizer.rows(req.model.id, most)
    bounds = parsing.Bounds(rows, settings.max_bulk_rows, settings.max_string_length,
                            settings.max_distinct_strings)
    source = area.input(given)  # checked first: a bad input is named before the output
    target = None
    if output is not None:
        with submitter.engine.connect() as conn:
            target = outputs.target(conn, area, output, overwrite, source.real)
        check_output(outputs.Target.loads(target).path, req.model)
    ref = refs.plan(area, given, target, req.model, bounds)
    return submitter.reference(req, ref, fingerprint)


def check_output(output: str | None, model: ModelInfo) -> None:
    """An output file's format must hold the model's predictions (a .npy array numbers)."""
    if output is not None and formats.by_suffix(output) is formats.NPY and \
            npy_dtype(model.labels) is None:
        raise InvalidInput("output", f"a .npy array holds numbers only; model {model.name} "
                                     "predicts labels that are not: write .parquet, .arrow, "
                                     ".csv, .ndjson or .json")
