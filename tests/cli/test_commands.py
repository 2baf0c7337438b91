"""The `predq` client commands as an operator meets them in their first hour: the version, the
service's status, the job list, what a refused key and Ctrl-C say, and progress that reads
right."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.progress import Progress
from service.client import Client
from service.models.registry import ModelInfo
from tests.support.processes import ROOT
from tests.support.tenants import Tenant

PREDQ = [sys.executable, "-m", "service.cli"]


def _env(tenant: Tenant, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PREDQ_URL": tenant.base_url,
            "PREDQ_API_KEY": tenant.key, **extra}


def predq(tenant: Tenant, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PREDQ, *args], env=_env(tenant, **env), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_rates_count_from_the_first_reading_and_a_terminal_is_not_flooded(
    capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    with Progress("job", "rows", clock=clock, tty=False) as shown:
        shown(900_000, 1_000_000)  # already 90% done when first seen: no rate yet
        clock.now += 2
        shown(1_000_000, 1_000_000)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "job: 900,000 of 1,000,000 rows (90%)"  # one word per thing
    assert lines[-1] == "job: 1,000,000 of 1,000,000 rows (100%), 50,000 rows/s"

    with Progress("upload", "MB", scale=1e6, clock=clock, tty=True) as shown:
        for block in range(1, 1001):  # a thousand blocks read within 0.1 s
            clock.now += 0.0001
            shown(block * 7_000, 7_000_000)
    drawn = capsys.readouterr().err
    assert drawn.count("\r") == 2, drawn  # the first reading, then the last: not a thousand
    assert drawn.split("\r")[-1].startswith("upload: 7.0 of 7.0 MB (100%), ")


def test_version(tenant: Tenant) -> None:
    version = predq(tenant, "--version")
    assert version.returncode == 0 and re.fullmatch(r"predq \d+\.\d+\.\d+\S*\n", version.stdout)


def test_status_without_an_id_is_the_service_s_status(tenant: Tenant, worker: object) -> None:
    shown = predq(tenant, "status")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"predq at {tenant.base_url}: ready"), out
    assert "database: ok" in out and "redis: ok" in out
    assert re.search(r"workers: [1-9]\d* predicting", out), out
    assert "predict.interactive" in out and "drain/s" in out


def test_jobs_lists_pages_and_filters(
    tenant: Tenant, worker: object, models: dict[str, ModelInfo]
) -> None:
    ids = [tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2]]) for _ in range(3)]
    for job_id in ids:
        assert tenant.wait(job_id)["status"] == "succeeded"
    listed = predq(tenant, "jobs", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "status", "model", "priority", "rows", "done", "created"]
    assert [line.split()[0] for line in lines[1:]] == [ids[2], ids[1]]
    cursor = re.search(r"--cursor (\S+)", listed.stderr)
    assert cursor, listed.stderr
    rest = predq(tenant, "jobs", "--limit", "2", "--cursor", cursor.group(1), "--json")
    assert [j["id"] for j in json.loads(rest.stdout)["jobs"]] == [ids[0]]
    none = predq(tenant, "jobs", "--status", "failed")
    assert none.stdout.splitlines()[1:] == [] and "no jobs match" in none.stderr
    bad = predq(tenant, "jobs", "--since", "yesterday")
    assert bad.returncode == 1 and "since" in bad.stderr


def test_a_refused_key_says_to_set_predq_api_key(tenant: Tenant, tmp_path: Path) -> None:
    env = _env(tenant, PREDQ_API_KEY="pq_not_a_key_at_all", PREDQ_VAR_DIR=str(tmp_path))
    refused = subprocess.run([*PREDQ, "jobs"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1
    assert "401" in refused.stderr and "set PREDQ_API_KEY" in refused.stderr
    assert f"there is no {tmp_path / 'dev-api-key'} here" in refused.stderr


def test_ctrl_c_while_waiting_leaves_the_job_running_and_says_how_to_cancel(
    tenant: Tenant, worker: object, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"x0": [5000.0] * 10, "x1": [1.0] * 10}), path)  # sleepy: 5 s
    waiting = subprocess.Popen([*PREDQ, "submit", "--model", "sleepy", "--input", str(path),
                                "--wait"], env=_env(tenant), cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert waiting.stdout is not None
    job_id = waiting.stdout.readline().strip()  # printed once the upload is accepted
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, err
    assert f"job {job_id} goes on" in err and f"predq cancel {job_id}" in err
    assert "Aborted!" not in err
    client = Client(tenant.base_url, tenant.key)
    assert client.status(job_id)["status"] in ("queued", "running")
    client.cancel(job_id)
