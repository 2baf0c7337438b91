"""A job's output file by reference: where it goes, and writing it without harming anyone
else's file.

An output is written to a temporary file next to the target, fsynced, then linked into place.
It replaces nothing its job did not create unless the job said `"overwrite": true`: the
identity (device, inode) of each file a job links into place is recorded in the job's row
first, so the same job may write again after its worker died, and no other file is ever
replaced. It never replaces a file an active job reads, a file with a second hard link, or a
read-only file.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update

from service.bulk import areas, download, formats
from service.bulk.areas import Area, Located
from service.core.errors import InvalidInput
from service.core.states import JobStatus
from service.store.db import jobs

ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
KEEP_MADE = 8  # identities of files a job made that its row remembers


@dataclass(frozen=True)
class Target:
    """An output as a job stores it (`jobs.output_ref`, JSON): relative to the data root, the
    directory it must stay inside, the name errors show, whether it may replace a file it did
    not make, and the files (`dev:inode`) its job made."""

    path: str
    base: str = ""
    shown: str = ""
    overwrite: bool = False
    made: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.shown or self.path

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> Target:
        """A target; a plain path is one stored before tenants had directories (relative to
        the whole root; it replaces nothing it did not make)."""
        if not text.startswith("{"):
            return cls(text)
        return cls(**json.loads(text))


def shown(text: str) -> str:
    """The name of a stored output, as its submitter wrote it."""
    return Target.loads(text).name


def target(conn: Connection, area: Area, given: object, overwrite: object,
           input_real: Path | None = None) -> str:
    """Check an output named at submit and return it as a job stores it."""
    if not isinstance(overwrite, bool):
        raise InvalidInput("overwrite", "true or false")
    located = area.output(given)
    fmt = formats.by_suffix(located.real)
    if fmt is None or fmt.write is None:
        raise InvalidInput("output", f"must end in {formats.names(formats.WRITABLE)}")
    if located.real == input_real:
        raise InvalidInput("output", f"{located.shown[:200]!r} is the job's input")
    if located.real.exists():
        if not overwrite:
            raise InvalidInput("output", f"{located.shown[:200]!r} exists: a job replaces "
                                         "a file only with \"overwrite\": true")
        replaceable(conn, area.data_root, located, None, area.tenant)
    return Target(located.path, located.base,
                  "" if located.shown == located.path else located.shown, overwrite).dumps()


def replaceable(conn: Connection, data_root: str, located: Located, job_id: str | None,
                tenant: str | None) -> None:
    """Refuse to replace a read-only file, or one an active job (other than `job_id`) reads;
    the job is named only to its own tenant."""
    shown_as = located.shown[:200]
    st = located.real.stat()
    # Its mode, not only access(): a process running as root may write anything.
    if not st.st_mode & 0o222 or not os.access(located.real, os.W_OK):
        raise InvalidInput("output", f"{shown_as!r} is read-only: not replaced")
    for row in _active_sources(conn, job_id):
        try:
            theirs = Path(data_root, json.loads(row.input_ref)["path"]).stat()
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) == (st.st_dev, st.st_ino):
            which = f" ({row.id})" if row.tenant == tenant else ""
            raise InvalidInput("output", f"{shown_as!r} is the input of a job still running"
                                         f"{which}: not replaced")


def _active_sources(conn: Connection, job_id: str | None) -> list[Row[Any, Any, Any]]:
    """The queued and running jobs by reference, but `job_id`: id, tenant, input_ref."""
    rows = conn.execute(select(jobs.c.id, jobs.c.tenant, jobs.c.input_ref).where(
        jobs.c.status.in_(ACTIVE), jobs.c.input_ref.is_not(None)))
    return [row for row in rows if row.id != job_id]


def write_output(engine: Engine, data_root: str, job_id: str) -> Path:
    """Assemble the job's result chunks into its output in the format its suffix names;
    concurrent writers of one job each use a temporary file of their own."""
    with engine.connect() as conn:
        stored = conn.execute(select(jobs.c.output_ref).where(jobs.c.id == job_id)).scalar()
    assert stored is not None
    out = Target.loads(stored)
    real = areas.recheck(data_root, out.path, out.base, out.name, "output", writing=True)
    fmt = formats.by_suffix(real)
    assert fmt is not None and fmt.write is not None
    real.parent.mkdir(parents=True, exist_ok=True)
    # No symbolic link made meanwhile leads the directory elsewhere.
    real = areas.recheck(data_root, out.path, out.base, out.name, "output", writing=True)
    partial = real.with_name(f".{real.name}.{uuid.uuid4().hex}.part")
    try:
        with open(partial, "wb") as stream:
            for block in download.render_any(engine, job_id, fmt):
                stream.write(block)
            stream.flush()
            os.fsync(stream.fileno())
        _remember(engine, job_id, partial)
        _place(engine, data_root, job_id, partial, Located(real, out.path, out.base, out.name),
               out.overwrite)
    finally:
        partial.unlink(missing_ok=True)
    return real


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def _remember(engine: Engine, job_id: str, partial: Path) -> None:
    """Record the file about to be linked into place as this job's own, before it is."""
    with engine.begin() as conn:
        out = Target.loads(conn.execute(select(jobs.c.output_ref).where(jobs.c.id == job_id)
                                        .with_for_update()).scalar_one())
        made = [*out.made, _identity(partial)][-KEEP_MADE:]
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(
            output_ref=replace(out, made=made).dumps()))


def _place(engine: Engine, data_root: str, job_id: str, partial: Path, located: Located,
           overwrite: bool) -> None:
    """Link `partial` into place: a new name, else a file this job made, else (with
    `overwrite`) any file no active job reads that is writable and singly linked."""
    try:
        os.link(partial, located.real)  # fails if the name exists: nothing is replaced
        return
    except FileExistsError:
        pass
    with engine.connect() as conn:
        row = conn.execute(select(jobs.c.output_ref, jobs.c.tenant).where(
            jobs.c.id == job_id)).one()
        made = Target.loads(row.output_ref).made
        if _identity(located.real) not in made:
            areas.check_file(located, "output", writing=True)  # a directory, a second link
            if not overwrite:
                raise InvalidInput("output", f"{located.shown[:200]!r} exists and this job "
                                             "did not make it: not replaced (\"overwrite\": "
                                             "true replaces it)")
            replaceable(conn, data_root, located, job_id, row.tenant)
    os.replace(partial, located.real)
