"""`make chaos`: load predq while killing its workers, Redis and PostgreSQL; nothing may be lost.

Everything runs as real processes on private instances (a redis-server on a unix socket, a
PostgreSQL cluster made by initdb in a temporary directory), never the machine's shared
servers: gunicorn API, two Celery workers, and beat running the reconciler every second. Every
job id that got a 202 is recorded; at the end each must be final, and each success must carry
the model's own predictions for its row. Prints the figures; exits non-zero on any loss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import psutil
import requests
from sqlalchemy import select

from bench.procs import Proc, ProcSet, stop, wait_http, wait_log
from service.cli import embedded
from service.cli.demo import register_demo_models
from service.core.settings import Settings
from service.store.db import jobs as jobs_table
from service.store.db import make_engine
from service.store.migrate import upgrade
from service.tenants import keys
from tests.support import pgserver
from tests.support.processes import free_port

ROOT = str(Path(__file__).resolve().parent.parent)
PY = sys.executable


class Chaos:
    """The system under test and the faults that can be done to it."""

    def __init__(self, workdir: Path, pg: pgserver.PrivatePostgres) -> None:
        self.workdir, self.pg = workdir, pg
        self.redis = embedded.start_redis(workdir)
        self.settings = Settings.from_env(
            {}, database_url=pg.url, redis_url=f"unix://{workdir / 'redis.sock'}",
            var_dir=str(workdir), model_dir=str(workdir / "models"), port=free_port(),
            lease_seconds=6, task_time_limit=4, republish_after=2, reconcile_interval=1,
        )
        upgrade(self.settings.database_url)
        self.engine = make_engine(self.settings.database_url, pool_pre_ping=True)
        with self.engine.begin() as conn:
            register_demo_models(conn, self.settings.model_dir, workdir / "train")
            self.key = keys.create_key(conn, "chaos")
        self.model = joblib.load(workdir / "train" / "iris.joblib")
        self.env = {**self.settings.env(), "PYTHONPATH": ROOT}
        self.procs = ProcSet(log_dir=str(workdir))
        self.workers: list[Proc] = []
        self.started_workers = 0
        self.faults: list[str] = []
        self.last_fault_at = 0.0

    def start(self) -> None:
        self.api = self.procs.start("api", [PY, "-m", "service.cli", "api"], self.env, cwd=ROOT)
        for _ in range(2):
            self.start_worker()
        self.procs.start("beat", [PY, "-m", "service.cli", "beat"], self.env, cwd=ROOT)
        wait_http("127.0.0.1", self.settings.port, "/healthz", 60, [self.api])

    def start_worker(self) -> None:
        self.started_workers += 1
        worker = self.procs.start(f"worker{self.started_workers}",
                                  [PY, "-m", "service.cli", "worker"], self.env, cwd=ROOT)
        wait_log(worker, "ready.", 60)
        self.workers.append(worker)

    # -- faults ---------------------------------------------------------------------------
    def kill_pool_process(self) -> None:
        children = psutil.Process(self.workers[-1].pid).children()
        if children:
            children[0].send_signal(signal.SIGKILL)
            self.faults.append("SIGKILL a worker pool process under load")

    def restart_redis(self, down_s: float = 1.0) -> None:
        self.redis.kill()  # its queue is gone; jobs submitted meanwhile are never published
        self.redis.wait()
        time.sleep(down_s)
        self.redis = embedded.start_redis(self.workdir)
        self.faults.append(f"SIGKILL Redis, restart it empty {down_s} s later")

    def bounce_postgres(self, down_s: float = 1.5) -> None:
        self.pg.stop()
        time.sleep(down_s)
        self.pg.start()
        self.faults.append(f"stop PostgreSQL for {down_s} s, start it again")

    def replace_worker(self) -> None:
        oldest = self.workers.pop(0)
        os.killpg(oldest.pid, signal.SIGTERM)  # warm shutdown while it fetches
        oldest.popen.wait(60)
        stop(oldest)
        self.start_worker()
        self.faults.append("SIGTERM a worker while it fetches, start a new one")

    def close(self) -> None:
        self.procs.__exit__(None, None, None)
        embedded.stop(self.redis)
        self.engine.dispose()


def load(chaos: Chaos, n: int, duration_s: float, clients: int = 8,
         ) -> dict[str, list[float]]:
    """Submit n single-row jobs paced over duration_s; return {job id: row} of every 202.
    A refused submit (503, connection error) was not accepted: the client tries again."""
    url = f"http://127.0.0.1:{chaos.settings.port}/v1/jobs"
    rows = np.random.default_rng(3).uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], (n, 4)).round(2)
    accepted: dict[str, list[float]] = {}
    lock = threading.Lock()
    start = time.monotonic()
    local = threading.local()

    def submit(i: int) -> None:
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["Authorization"] = f"Bearer {chaos.key}"
        time.sleep(max(0.0, start + i * duration_s / n - time.monotonic()))
        row = rows[i].tolist()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = local.http.post(url, json={"model": "iris", "inputs": [row]},
                                           timeout=30)
            except requests.RequestException:
                time.sleep(0.2)
                continue
            if response.status_code == 202:
                with lock:
                    accepted[response.json()["id"]] = row
                return
            time.sleep(0.2)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(submit, range(n)))
    return accepted


def run(n: int, cycles: int) -> dict[str, Any]:
    if not pgserver.available():
        raise SystemExit("chaos needs PostgreSQL server binaries and root")
    pg = pgserver.PrivatePostgres()
    pg.start()
    workdir = Path(tempfile.mkdtemp(prefix="predq-chaos-"))
    chaos = Chaos(workdir, pg)
    try:
        chaos.start()
        steps: list[Callable[[], None]] = [chaos.kill_pool_process, chaos.restart_redis,
                                           chaos.bounce_postgres, chaos.replace_worker]
        gap = 1.5
        duration = cycles * len(steps) * (gap + 1.5) + gap

        def inject() -> None:
            for _ in range(cycles):
                for step in steps:
                    time.sleep(gap)
                    step()
                    chaos.last_fault_at = time.monotonic()

        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                inject()
            except BaseException as exc:  # noqa: BLE001 - reported, and the run fails
                errors.append(exc)

        faults = threading.Thread(target=guarded)
        started = time.monotonic()
        faults.start()
        accepted = load(chaos, n, duration)
        faults.join()
        if errors:
            raise RuntimeError(f"fault injection broke: {errors[0]!r}") from errors[0]
        outcome = settle(chaos, accepted, timeout=180)
        outcome.update(
            workdir=str(workdir), jobs_accepted=len(accepted), faults_injected=len(chaos.faults),
            faults=sorted(set(chaos.faults)), run_s=round(time.monotonic() - started, 1),
            # from the end of the last fault to every accepted job final
            time_to_recover_s=round(outcome.pop("settled_at") - chaos.last_fault_at, 1),
        )
        return outcome
    finally:
        chaos.close()
        pg.remove()


def settle(chaos: Chaos, accepted: dict[str, list[float]], timeout: float) -> dict[str, Any]:
    """Wait until every accepted job is final, then check each one against the model."""
    deadline = time.monotonic() + timeout
    while True:
        with chaos.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(
                jobs_table.c.id, jobs_table.c.status, jobs_table.c.result, jobs_table.c.error))}
        unfinished = [i for i in accepted if i not in rows
                      or rows[i].status in ("queued", "running")]
        if not unfinished or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    settled_at = time.monotonic()
    succeeded = [i for i in accepted if i in rows and rows[i].status == "succeeded"]
    failed = {i: rows[i].error for i in accepted if i in rows and rows[i].status == "failed"}
    wrong = [i for i in succeeded if json.loads(rows[i].result)["predictions"]
             != chaos.model.predict(np.array([accepted[i]])).tolist()]
    return {
        "jobs_succeeded": len(succeeded), "jobs_failed": len(failed),
        "failure_reasons": sorted(set(failed.values()))[:5],
        "jobs_lost": len([i for i in accepted if i not in rows]),
        "jobs_unfinished": len([i for i in unfinished if i in rows]),
        "jobs_with_wrong_result": len(wrong),
        "rows_without_a_202": len(set(rows) - set(accepted)),
        "settled_at": settled_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one fault cycle (for CI)")
    args = parser.parse_args()
    n, cycles = (600, 1) if args.quick else (4000, 4)
    figures = run(n, cycles)
    print(json.dumps(figures, indent=2))
    bad = figures["jobs_lost"] + figures["jobs_unfinished"] + figures["jobs_with_wrong_result"]
    if bad:
        print(f"chaos: {bad} accepted jobs lost, unfinished or wrong; logs kept in "
              f"{figures['workdir']}", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(figures["workdir"], ignore_errors=True)  # logs are kept only for a failure
    print(f"chaos: {figures['jobs_accepted']} accepted jobs, none lost "
          f"({figures['faults_injected']} faults injected)")


if __name__ == "__main__":
    main()
