"""The `predq` command as an operator runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
from sqlalchemy import select

from service.core.settings import Settings
from service.ops import heartbeats
from service.store.db import api_keys, make_engine
from tests.support.processes import ROOT, free_port

PREDQ = [sys.executable, "-m", "service.cli"]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PREDQ, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PREDQ_VAR_DIR=str(tmp_path / "var"), PREDQ_MODEL_DIR=str(tmp_path / "var/models"),
               DATABASE_URL=f"sqlite:///{tmp_path}/cli.db", PYTHONPATH=str(ROOT))
    return env


def test_operator_migrates_registers_a_model_and_creates_a_key(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert _run(["db", "upgrade"], cli_env).returncode == 0
    assert "registered: iris, diabetes" in _run(["models", "demo"], cli_env).stdout
    artifact = tmp_path / "var/demo/iris.joblib"
    added = _run(["models", "add", str(artifact), "--name", "flowers", "--version", "2",
                  "--feature-names", "a,b,c,d"], cli_env)
    assert added.returncode == 0, added.stderr
    assert re.search(r"registered flowers 2 \(classifier, 4 features\) sha256 [0-9a-f]{64}",
                     added.stdout)
    again = _run(["models", "add", str(artifact), "--name", "flowers", "--version", "2"], cli_env)
    assert again.returncode != 0 and "already registered" in again.stderr
    listed = _run(["models", "list"], cli_env).stdout.splitlines()
    assert listed[0] == "name\tversion\tkind\tfeatures\tsha256\tinputs"  # a header, like keys list
    assert any(line.startswith("flowers\t2\tclassifier\t4\t") for line in listed[1:])

    key = _run(["keys", "create", "--tenant", "acme"], cli_env).stdout.strip()
    assert key.startswith("pq_") and len(key) > 40
    engine = make_engine(cli_env["DATABASE_URL"])
    with engine.connect() as conn:
        stored = [tuple(map(str, row)) for row in conn.execute(select(api_keys))]
    assert stored and not any(key in value for row in stored for value in row)
    assert _run(["keys", "revoke", key[:10]], cli_env).stdout.strip() == "revoked 1 key(s)"
    engine.dispose()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGHUP],
                         ids=["ctrl-c", "terminal-closed"])
def test_predq_up_prints_a_curl_line_that_works_and_ctrl_c_stops_everything(
    tmp_path: Path, stop_signal: signal.Signals,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PREDQ_VAR_DIR=str(tmp_path / "var"), PREDQ_MODEL_DIR=str(tmp_path / "var/models"),
               PREDQ_PORT=str(port), PYTHONPATH=str(ROOT))
    log = open(tmp_path / "up.log", "w+")  # noqa: SIM115
    up = subprocess.Popen([*PREDQ, "up"], env=env, cwd=tmp_path, stdout=log,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output = _wait_for(tmp_path / "up.log", "curl -s " + f"http://127.0.0.1:{port}/v1/jobs/")
        lines = output.split("Try it:\n", 1)[1].splitlines()
        submit = "\n".join(lines[:3])
        _wait_http(port)
        accepted = subprocess.run(["bash", "-c", submit], capture_output=True, text=True,
                                  timeout=30)
        job = json.loads(accepted.stdout)
        assert job["status"] == "queued", accepted
        poll = lines[3].replace("JOB_ID", job["id"])
        deadline = time.monotonic() + 60
        while True:
            result = json.loads(subprocess.run(["bash", "-c", poll], capture_output=True,
                                               text=True, timeout=30).stdout)
            if "predictions" in result or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert result["predictions"] == ["setosa"], result
        # Quiet: the banner, then only warnings and errors (no Celery banners or task lines).
        assert "celery@" not in output and "[tasks]" not in output
        assert f"export PREDQ_URL=http://127.0.0.1:{port}" in output
        # The CLI finds the API `predq up` runs, from the same settings (no PREDQ_URL).
        cli_env = {**env, "PREDQ_API_KEY": (tmp_path / "var/dev-api-key").read_text().strip()}
        cli_env.pop("PREDQ_URL", None)
        status = subprocess.run([*PREDQ, "status", job["id"]], env=cli_env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and '"succeeded"' in status.stdout, status.stderr
        # A second `predq up` on the same var/ is refused, and leaves the first one alone.
        second = subprocess.run([*PREDQ, "up"], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1 and "another `predq up`" in second.stderr
        assert "Traceback" not in second.stderr
        sock = tmp_path / "var/redis.sock"
        assert redis.Redis(unix_socket_path=str(sock)).ping()
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= 6  # redis, gunicorn master + 2 workers, celery + 2 children
    finally:
        os.killpg(up.pid, stop_signal)  # what Ctrl-C, or closing the terminal, does
        up.wait(60)
        log.close()
    assert up.returncode == 0
    printed = (tmp_path / "up.log").read_text()
    assert "Traceback" not in printed  # every child stopped cleanly
    # The banner, then only warnings and errors, from start to stop: no gunicorn or Celery
    # INFO lines, no beat banner, no requeue notice on the way out.
    assert not re.search(r" INFO |Booting worker|Starting gunicorn|celery beat v|Requeuing",
                         printed), printed
    assert "webhooks to:  public addresses only; PREDQ_WEBHOOK_ALLOW_HOSTS=" in printed
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert alive == [], [p.cmdline() for p in alive]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=str(sock), socket_connect_timeout=1).ping()
    assert Settings.from_env({"PREDQ_VAR_DIR": "x"}).var_dir  # settings still importable


def test_predq_up_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PREDQ_VAR_DIR=str(tmp_path / "var"), PREDQ_PORT=str(port), PYTHONPATH=str(ROOT))
    try:
        up = subprocess.run([*PREDQ, "up"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    finally:
        taken.close()
    assert up.returncode == 1
    assert up.stderr.strip().splitlines() == [
        f"predq: port {port} on 127.0.0.1 is taken by another program; choose another with "
        f"PREDQ_PORT, e.g. PREDQ_PORT={port + 1} make run"]
    assert not (tmp_path / "var/redis.sock").exists()  # nothing was started


def test_the_cli_names_the_url_it_found_no_api_at(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREDQ_URL"}
    env.update(PREDQ_PORT=str(port), PREDQ_API_KEY="pq_x", PYTHONPATH=str(ROOT))
    status = subprocess.run([*PREDQ, "status", "some-job"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert f"no predq API at http://127.0.0.1:{port}; set PREDQ_URL" in status.stderr


def _wait_for(path: Path, needle: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not printed:\n{path.read_text()[-3000:]}")


def _wait_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("API did not listen")


def test_worker_health_check_reads_this_hosts_heartbeat(settings: Settings) -> None:
    import socket

    import redis
    from click.testing import CliRunner

    from service.cli.main import main

    client = redis.Redis.from_url(settings.redis_url)
    name = f"{socket.gethostname()}:424242"
    env = settings.env()
    client.zrem(heartbeats.WORKERS, name)
    try:
        if not any(m.startswith(f"{socket.gethostname()}:".encode())
                   for m in client.zrange(heartbeats.WORKERS, 0, -1)):
            dead = CliRunner().invoke(main, ["health", "worker"], env=env)
            assert dead.exit_code == 1 and "no worker heartbeat" in dead.output
        heartbeats.heartbeat(client, name)
        alive = CliRunner().invoke(main, ["health", "worker"], env=env)
        assert alive.exit_code == 0 and "worker alive" in alive.output
    finally:
        client.zrem(heartbeats.WORKERS, name)
        client.close()
