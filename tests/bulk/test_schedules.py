"""Scheduled bulk forecasts: declared in TOML, run by `predq beat`, each run exactly once."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import joblib
import pytest
import redis
from sqlalchemy import Engine, delete, func, select

from service.bulk import schedules
from service.cli.processes import stop_all
from service.core.broker import celery_publisher
from service.core.settings import Settings
from service.jobs.submit import make_submitter
from service.models.registry import ModelInfo
from service.store.db import jobs, schedule_runs
from service.tenants import limits
from tests.bulk.test_bulk_api import as_csv, iris_rows
from tests.support.processes import ROOT
from tests.support.tenants import Tenant
from workers.app import make_celery


@pytest.fixture
def plan(tmp_path: Path, tenant: Tenant, models: dict[str, ModelInfo], engine: Engine
         ) -> Iterator[tuple[Path, Path]]:
    """A schedules file with one schedule for the tenant, and the input it reads."""
    rows = iris_rows(500, seed=3)
    (tmp_path / "in").mkdir()
    old = tmp_path / "in" / "old.csv"
    old.write_bytes(as_csv(rows[:10], models["iris"].feature_names))
    newest = tmp_path / "in" / "today.csv"
    newest.write_bytes(as_csv(rows, models["iris"].feature_names))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    name = f"nightly-{tenant.name}"
    path = tmp_path / "schedules.toml"
    path.write_text(f'''
[[schedule]]
name = "{name}"
cron = "*/5 * * * *"
tenant = "{tenant.name}"
model = "iris"
input = "{tmp_path / 'in' / '*.csv'}"
output = "{tmp_path / 'out' / '{name}-{time}.csv'}"
''')
    yield path, newest
    with engine.begin() as conn:
        conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule == name))


def count(engine: Engine, tenant: Tenant) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs).where(
            jobs.c.tenant == tenant.name)).scalar_one())


def test_a_schedule_is_admitted_and_charged_like_any_submit(
    plan: tuple[Path, Path], engine: Engine, settings: Settings, tenant: Tenant,
) -> None:
    """A scheduled run goes through the one submit: a tenant's rows per minute and its share of
    the queue bind it as they bind an upload, and the rows it takes count for the tenant."""
    path, _ = plan
    declared = schedules.load(str(path))  # 500 rows every 5 minutes, on the bulk queue
    client = redis.Redis.from_url(settings.redis_url)
    # A share of one job of the bulk queue for any tenant; nothing is published (no worker).
    narrow = settings.replace(max_depth_bulk=1000, tenant_queue_share=0.001)
    submitter = make_submitter(narrow, engine, client, None)
    now = datetime(2026, 11, 29, 2, 3, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            limits.set_limits(conn, tenant.name, rows_per_minute=400)
        assert schedules.run_due(submitter, narrow, declared, now) == []  # 500 rows never fit
        assert count(engine, tenant) == 0
        with engine.begin() as conn:
            limits.set_limits(conn, tenant.name, rows_per_minute=600)
        time.sleep(2.1)  # the limits are re-read from SQL every 2 s
        assert len(schedules.run_due(submitter, narrow, declared, now)) == 1
        # The run took 500 of the tenant's 600 rows this minute: an upload of 150 more waits.
        over = tenant.post("/v1/jobs", json={"model": "iris",
                                             "inputs": [[5.1, 3.5, 1.4, 0.2]] * 150})
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
        with engine.begin() as conn:
            limits.set_limits(conn, tenant.name, rows_per_minute=0)
        time.sleep(2.1)
        # The next run finds the tenant's share of the bulk queue full: refused, not queued.
        assert schedules.run_due(submitter, narrow, declared, now + timedelta(minutes=5)) == []
        assert count(engine, tenant) == 1
    finally:
        with engine.begin() as conn:
            limits.clear_limits(conn, tenant.name)
        client.close()


def test_each_scheduled_time_runs_once_however_many_beats_ask(
    plan: tuple[Path, Path], engine: Engine, settings: Settings, tenant: Tenant,
    worker: object, models: dict[str, ModelInfo],
) -> None:
    path, newest = plan
    declared = schedules.load(str(path))
    celery = make_celery(settings)
    submitter = make_submitter(settings, engine, redis.Redis.from_url(settings.redis_url),
                               celery_publisher(celery))
    now = datetime(2026, 11, 29, 2, 3, tzinfo=UTC)
    try:
        with ThreadPoolExecutor(4) as pool:  # four beats at the same moment
            submitted = list(pool.map(
                lambda _: schedules.run_due(submitter, settings, declared, now), range(4)))
        assert sum(len(s) for s in submitted) == 1 and count(engine, tenant) == 1
        assert schedules.run_due(submitter, settings, declared, now) == []  # restart
        later = schedules.run_due(submitter, settings, declared, now + timedelta(minutes=5))
        assert len(later) == 1 and count(engine, tenant) == 2
        # A beat that was down past a run's catch-up window does not replay it late.
        daily = [replace(declared[0], cron="0 2 * * *")]
        assert schedules.run_due(submitter, settings, daily,
                                 datetime(2026, 11, 30, 3, 0, 1, tzinfo=UTC)) == []
        assert count(engine, tenant) == 2
        job_id = later[0]
        assert tenant.wait(job_id, timeout=60)["status"] == "succeeded"
        schedules.write_outputs(engine, declared)  # (an earlier run_due may have written it)
    finally:
        celery.close()
    out = path.parent / "out" / f"{declared[0].name}-20261129T020500Z.csv"
    with open(out, newline="") as fh:
        table = list(csv.reader(fh))
    model = joblib.load(models["iris"].artifact_path)
    expected = model.predict(iris_rows(500, seed=3)).tolist()  # the newest file was read
    assert [r[0] for r in table[1:]] == expected
    with engine.connect() as conn:
        run = conn.execute(select(schedule_runs).where(
            schedule_runs.c.job_id == job_id)).mappings().one()
    assert run["input"] == str(newest) and run["written_at"] is not None


@pytest.mark.parametrize(("text", "words"), [
    ('[[schedule]]\nname = "a"\ncron = "every day"\ntenant = "t"\nmodel = "m"\n'
     'input = "x.csv"', "not a cron expression"),
    ('[[schedule]]\nname = "a"\ncron = "0 2 * * *"\ntenant = "t"\nmodel = "m"\n',
     "missing field 'input'"),
    ('[[schedule]]\nname = "a"\ncron = "0 2 * * *"\ntenant = "t"\nmodel = "m"\n'
     'input = "x.csv"\ncolour = "red"', "unknown field 'colour'"),
    ('[[schedule]]\nname = "a"\ncron = "0 2 * * *"\ntenant = "t"\nmodel = "m"\n'
     'input = "x.csv"\noutput = "y.xlsx"', "output must end in"),
    ('[[schedule]]\nname = "a"\ncron = "0 2 * * *"\ntenant = "t"\nmodel = "m"\n'
     'input = "x.csv"\noutput = "y-{date}.csv"', "say overwrite = true"),
    ("[[schedule]\n", "schedules.toml"),
])
def test_a_bad_schedules_file_names_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    with pytest.raises(schedules.ScheduleError) as error:
        schedules.load(str(path))
    assert words in error.value.message


def test_predq_beat_submits_a_due_schedule_once_even_with_two_beats(
    plan: tuple[Path, Path], engine: Engine, settings: Settings, tenant: Tenant,
    worker: object, tmp_path: Path,
) -> None:
    path, _ = plan
    path.write_text(path.read_text().replace("*/5 * * * *", "* * * * *"))
    from service.cli.processes import beat_command

    beats = []
    for i in range(2):
        var = tmp_path / f"beat{i}"
        var.mkdir()
        env = {**os.environ, **settings.replace(var_dir=str(var), schedules=str(path),
                                                 schedule_interval=1.0).env(),
               "PYTHONPATH": str(ROOT)}
        beats.append(subprocess.Popen([sys.executable, *beat_command(settings.replace(
            var_dir=str(var)))], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        deadline = time.monotonic() + 90
        while not list((path.parent / "out").glob("*.csv")):
            assert time.monotonic() < deadline, "no output written"
            time.sleep(0.5)
        time.sleep(3)  # more beat ticks: none may submit the same minute again
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        with engine.connect() as conn:
            runs = conn.execute(select(schedule_runs.c.scheduled_for).where(
                schedule_runs.c.schedule == f"nightly-{tenant.name}")).scalars().all()
        assert len(runs) == count(engine, tenant) <= 2  # one per minute the test spanned
        assert len(set(runs)) == len(runs) and minute - timedelta(minutes=2) <= max(
            r if r.tzinfo else r.replace(tzinfo=UTC) for r in runs) <= minute
    finally:
        stop_all(beats, grace=30)


def test_a_schedule_reading_from_the_data_root_submits_by_reference(
    engine: Engine, settings: Settings, tenant: Tenant, worker: object,
    models: dict[str, ModelInfo],
) -> None:
    """Input and output under the data root: beat reads only the header, a worker the rows,
    and the worker that finishes the job writes the output (beat does not write it again).
    The operator declared the paths: they name files anywhere under the root, here outside
    the tenant's own directory; an output without {time} replaces its file only because the
    schedule says `overwrite = true`."""
    import numpy as np
    import pyarrow.parquet as pq

    here = Path(settings.data_root) / f"schedule-{tenant.name}"
    (here / "in").mkdir(parents=True)
    rows = iris_rows(700, seed=5)
    np.save(here / "in" / "rows.npy", rows)
    name = f"ref-{tenant.name}"
    path = here / "schedules.toml"
    path.write_text(f'''
[[schedule]]
name = "{name}"
cron = "0 2 * * *"
tenant = "{tenant.name}"
model = "iris"
input = "{here / 'in' / '*.npy'}"
output = "{here / 'out' / '{name}-{date}.parquet'}"
overwrite = true
''')
    (here / "out").mkdir()
    (here / "out" / f"{name}-2026-11-29.parquet").write_bytes(b"yesterday's run, say")
    celery = make_celery(settings)
    submitter = make_submitter(settings, engine, redis.Redis.from_url(settings.redis_url),
                               celery_publisher(celery))
    try:
        [job_id] = schedules.run_due(submitter, settings, schedules.load(str(path)),
                                     datetime(2026, 11, 29, 2, 3, tzinfo=UTC))
        assert tenant.wait(job_id, timeout=60)["status"] == "succeeded"
        with engine.connect() as conn:
            job = conn.execute(select(jobs.c.input_ref, jobs.c.output_ref).where(
                jobs.c.id == job_id)).one()
        assert job.input_ref is not None and job.output_ref is not None
        model = joblib.load(models["iris"].artifact_path)
        out = here / "out" / f"{name}-2026-11-29.parquet"
        assert pq.read_table(out).column("prediction").to_pylist() == \
            model.predict(rows).tolist()
        assert schedules.write_outputs(engine, schedules.load(str(path))) == 0
    finally:
        celery.close()
        with engine.begin() as conn:
            conn.execute(delete(schedule_runs).where(schedule_runs.c.schedule == name))
