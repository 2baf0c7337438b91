"""Periodic bulk forecasts declared in a TOML file (PREDQ_SCHEDULES):

    [[schedule]]
    name = "nightly-iris"            # letters, digits, - _ .
    cron = "0 2 * * *"               # in UTC
    tenant = "acme"
    model = "iris"                   # version = "..." to pin one
    input = "/data/iris/*.csv"       # a file or a glob: the newest match is used
    output = "/data/out/iris-{time}.csv"   # optional: .csv, .ndjson, .parquet, .npy, .arrow
    overwrite = false                # true: `output` may replace a file (needed without {time})

`predq beat` runs `run_due` every minute. A run is submitted with the idempotency key
`schedule:<name>:<scheduled time>` in the job's own transaction, so a restarted beat, a second
beat or an overlapping run never enqueues a run twice. A run missed by more than `catch_up`
seconds (beat was down) is skipped, not replayed late. Once the job succeeds, its result is
written to `output` (through a temporary file, renamed when complete).

The paths are the server's, as the operator declares them: absolute (or relative to beat's
working directory), `input` a glob. An input under the data root (PREDQ_DATA_ROOT) in a
format read by reference (.npy, Parquet, CSV) is submitted by reference: beat reads only its
header, the workers its rows, and an output under the root too is written by the worker that
finishes the job. Such paths are relative to the whole root, not to the tenant's directory:
the operator, not the tenant, names them. An output replaces no file unless `overwrite`, so
one without `{time}` (the same name every run) must say `overwrite = true`.
"""

from __future__ import annotations

import glob
import logging
import os
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from croniter import croniter
from sqlalchemy import Engine, insert, select, update

from service.bulk import download, formats, intake, refs
from service.bulk.areas import Area
from service.core import states, times
from service.core.errors import PredqError
from service.core.settings import Settings
from service.jobs import idempotency, priorities
from service.jobs.requests import Options
from service.jobs.submit import Submitter
from service.store.db import jobs as job_rows
from service.store.db import schedule_runs

log = logging.getLogger(__name__)
OUTPUTS = (formats.CSV, formats.NDJSON, formats.PARQUET, formats.NPY, formats.ARROW)


class ScheduleError(PredqError):
    status = 400
    code = "invalid_schedule"


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    tenant: str
    model: str
    input: str
    output: str | None = None
    version: str | None = None
    priority: str = "bulk"
    catch_up: float = 3600.0
    overwrite: bool = False

    def due(self, now: datetime) -> datetime:
        """The latest scheduled time at or before `now`."""
        return croniter(self.cron, now + timedelta(microseconds=1)).get_prev(datetime)

    def key(self, when: datetime) -> str:
        return f"schedule:{self.name}:{when.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def load(path: str) -> list[Schedule]:
    """Read and check the schedules file; every mistake names the schedule and the field."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScheduleError(f"{path}: {exc}") from exc
    out: list[Schedule] = []
    for i, raw in enumerate(data.get("schedule", [])):
        where = f"{path}: schedule {raw.get('name', i)!r}"
        fields = {f for f in Schedule.__dataclass_fields__}
        unknown = sorted(set(raw) - fields)
        missing = sorted({"name", "cron", "tenant", "model", "input"} - set(raw))
        if unknown or missing:
            raise ScheduleError(f"{where}: " + (f"unknown field {unknown[0]!r}" if unknown
                                                 else f"missing field {missing[0]!r}"))
        schedule = Schedule(**raw)
        if not croniter.is_valid(schedule.cron):
            raise ScheduleError(f"{where}: cron {schedule.cron!r} is not a cron expression")
        output = formats.by_suffix(schedule.output) if schedule.output else None
        if schedule.output and (output not in OUTPUTS):
            raise ScheduleError(f"{where}: output must end in {formats.names(OUTPUTS)}")
        if schedule.output and "{time}" not in schedule.output and schedule.overwrite is not True:
            raise ScheduleError(f"{where}: output without {{time}} is the same file every run: "
                                "say overwrite = true to replace it")
        if formats.by_suffix(schedule.input) not in formats.READABLE:
            raise ScheduleError(f"{where}: input must end in {formats.names(formats.READABLE)}")
        priorities.queue_for(schedule.priority)
        out.append(schedule)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ScheduleError(f"{path}: two schedules share a name")
    return out


def run_due(submitter: Submitter, settings: Settings, schedules: list[Schedule],
            now: datetime | None = None) -> list[str]:
    """Submit every schedule whose latest time has no run yet (through the one submit:
    admitted to its queue and charged to its tenant like any upload); write finished outputs.
    Returns the job ids submitted."""
    now = now or times.utcnow()
    submitted = []
    for schedule in schedules:
        when = schedule.due(now)
        if (now - when).total_seconds() > schedule.catch_up:
            continue
        try:
            job_id = _submit(submitter, settings, schedule, when)
        except Exception as exc:  # noqa: BLE001 - one broken schedule must not stop the others
            log.error("schedule %s at %s not submitted: %s", schedule.name, when, exc)
            continue
        if job_id:
            submitted.append(job_id)
    write_outputs(submitter.engine, schedules)
    return submitted


def _submit(submitter: Submitter, settings: Settings, schedule: Schedule, when: datetime,
            ) -> str | None:
    key = schedule.key(when)
    engine = submitter.engine
    with engine.connect() as conn:
        if idempotency.find(conn, schedule.tenant, key) is not None:
            return None  # this run was submitted already (by this beat or another)
    req = submitter.requests.build(schedule.tenant, Options(
        schedule.model, schedule.version, schedule.priority, key=key))
    path = newest(schedule.input)
    fmt = formats.by_suffix(path)
    assert fmt is not None
    wanted = idempotency.fingerprint("schedule", schedule.name, key)
    output = _output_path(schedule, when)
    intake.check_output(output, req.model)
    if under_root(settings.data_root, path) and fmt in refs.INPUTS:
        # The workers read it, and write the output too if it is under the root as well.
        out = output if output and under_root(settings.data_root, output) else None
        accepted = intake.submit_reference(submitter, settings, req, _absolute(path), out and
                                           _absolute(out), wanted, schedule.overwrite,
                                           Area(settings.data_root))
    else:
        with open(path, "rb") as stream:
            accepted = intake.submit_stream(submitter, settings, req, fmt, stream,
                                            lambda: wanted)
    if accepted.replayed:
        return None  # another beat won the race: one run only
    with engine.begin() as conn:
        conn.execute(insert(schedule_runs), {
            "schedule": schedule.name, "scheduled_for": when, "job_id": accepted.id,
            "input": path, "output": output, "written_at": None})
    log.info("schedule %s: run for %s submitted as job %s from %s", schedule.name,
             when.isoformat(), accepted.id, path)
    return accepted.id


def under_root(data_root: str, path: str) -> bool:
    """Whether `path` is (really) under the data root: then jobs name it by reference."""
    if not data_root:
        return False
    try:
        Area(data_root).output(_absolute(path))  # inside the root, links followed
    except PredqError:
        return False
    return True


def _absolute(path: str) -> str:
    return str(Path(path).absolute())


def newest(pattern: str) -> str:
    matches = [p for p in glob.glob(pattern) if os.path.isfile(p)]
    if not matches:
        raise ScheduleError(f"no input file matches {pattern!r}")
    return max(matches, key=os.path.getmtime)


def write_outputs(engine: Engine, schedules: list[Schedule]) -> int:
    """Write the result file of every succeeded run that has an output and none yet."""
    wanted = {s.name for s in schedules if s.output}
    with engine.connect() as conn:
        rows = conn.execute(
            select(schedule_runs.c.schedule, schedule_runs.c.scheduled_for,
                   schedule_runs.c.job_id, schedule_runs.c.output)
            .join(job_rows, job_rows.c.id == schedule_runs.c.job_id)
            .where(schedule_runs.c.written_at.is_(None), schedule_runs.c.output.is_not(None),
                   job_rows.c.output_ref.is_(None),  # else its worker wrote it
                   job_rows.c.status == states.JobStatus.SUCCEEDED.value)).all()
    written = 0
    for row in rows:
        if row.schedule not in wanted:
            continue
        placed = True
        try:
            write_result(engine, row.job_id, Path(row.output),
                         next(s.overwrite for s in schedules if s.name == row.schedule))
        except FileExistsError:  # not retried: it would exist next time too
            log.error("schedule %s: %s exists and overwrite is off: not replaced; the result "
                      "stays in the store (job %s)", row.schedule, row.output, row.job_id)
            placed = False
        except Exception as exc:  # noqa: BLE001 - retried on the next run
            log.error("schedule %s: could not write %s: %s", row.schedule, row.output, exc)
            continue
        with engine.begin() as conn:
            conn.execute(update(schedule_runs).where(
                schedule_runs.c.schedule == row.schedule,
                schedule_runs.c.scheduled_for == row.scheduled_for)
                .values(written_at=times.utcnow()))
        written += placed
    return written


def write_result(engine: Engine, job_id: str, target: Path, overwrite: bool = False) -> None:
    """A succeeded job's result in the format `target`'s suffix names (FileExistsError if
    `target` exists and not `overwrite`)."""
    with engine.connect() as conn:
        tenant = conn.execute(select(job_rows.c.tenant).where(
            job_rows.c.id == job_id)).scalar_one()
    fmt = formats.by_suffix(target)
    assert fmt is not None and fmt in OUTPUTS
    download.write_file(engine, tenant, job_id, fmt, target, overwrite)


def _output_path(schedule: Schedule, when: datetime) -> str | None:
    if not schedule.output:
        return None
    return schedule.output.format(name=schedule.name, time=when.strftime("%Y%m%dT%H%M%SZ"),
                                  date=when.strftime("%Y-%m-%d"))



