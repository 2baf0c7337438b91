"""A plain `pip install .`, as the Dockerfile does it (no extras), into a fresh virtual
environment: the client commands of `predq` work against a live API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.tenants import Tenant

SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.skipif(bool(os.environ.get("TEST_DATABASE_URL")),
                    reason="the install does not depend on the result store: the SQLite pass "
                           "runs it")
@pytest.mark.timeout(900)
def test_a_plain_install_runs_the_client_commands(
    tmp_path: Path, api_url: str, tenant: Tenant, worker: object
) -> None:
    source = tmp_path / "src"  # what the Dockerfile copies, and nothing else
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("service", "workers", "migrations"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
                             capture_output=True, text=True, timeout=840)
    assert install.returncode == 0, install.stderr[-3000:]

    job_id = tenant.submit("iris", [SETOSA])
    assert tenant.wait(job_id)["status"] == "succeeded"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PREDQ_URL": api_url, "PREDQ_API_KEY": tenant.key}
    for args, words in ((["status", job_id], "succeeded"),
                        (["result", job_id, "-o", "out.csv"], "out.csv")):
        done = subprocess.run([str(venv / "bin" / "predq"), *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and words in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("setosa")
