"""A succeeded job's result in any written format: for the result endpoint (streamed) and
for schedules' output files (through a temporary file, renamed when complete)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from service.bulk import results
from service.bulk.formats import Format
from service.bulk.results import ResultInfo
from service.jobs import chunkresults, lifecycle


def render(engine: Engine, tenant: str, job_id: str, fmt: Format) -> Iterator[bytes]:
    """The job's result in `fmt`, chunk by chunk (a bulk job's chunks are read from SQL as
    the body is written, on a connection of their own). JobNotFound or JobNotFinished are
    raised here, before the first byte."""
    with engine.connect() as conn:
        meta = lifecycle.result_source(conn, tenant, job_id)
    return _render(engine, job_id, meta, fmt)


def render_any(engine: Engine, job_id: str, fmt: Format) -> Iterator[bytes]:
    """`render` for a job of any tenant whose chunks are all done, succeeded or not yet (a
    job's output file is written before it succeeds)."""
    with engine.connect() as conn:
        meta = lifecycle.output_source(conn, job_id)
    return _render(engine, job_id, meta, fmt)


def _render(engine: Engine, job_id: str, meta: dict[str, Any], fmt: Format
            ) -> Iterator[bytes]:
    source = chunkresults.result_chunks(engine, job_id, meta["result"])
    info = ResultInfo(meta["n_rows"], meta["labels"], {
        "model": meta["name"], "version": meta["version"], "sha256": meta["sha256"]})
    results.check(fmt.name, info)
    return fmt.writer()(source, info)  # type: ignore[no-any-return]


def write_file(engine: Engine, tenant: str, job_id: str, fmt: Format, target: Path,
               overwrite: bool = False) -> None:
    """Write the result to `target`; a reader never sees half a file. An existing `target`
    is replaced only if `overwrite` (else FileExistsError)."""
    body = render(engine, tenant, job_id, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with open(partial, "wb") as out:
            for block in body:
                out.write(block)
        if overwrite:
            partial.replace(target)
        else:
            os.link(partial, target)  # never replaces: FileExistsError if it exists
    finally:
        partial.unlink(missing_ok=True)
