"""A running predq stack as the mixed-load scenarios use it: bulk jobs by reference for two
tenants, their times from the result store's own clock, and synchronous predicts at a rate."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests
from sqlalchemy import text

from bench.loadgen import LoadResult, run_load
from bench.run_baseline import pct

BIG_TENANT, SMALL_TENANT = "tenant-a", "tenant-b"
SYNC_TIMEOUT_S = 10  # a sync predict slower than this answers 202 (counted in not_200)
POLL_S = 0.05
FINAL = ("succeeded", "failed", "cancelled", "expired")


class ScenarioError(RuntimeError):
    """A job failed, was refused or did not end in time: the scenario has no figures."""


@dataclass(frozen=True)
class JobRun:
    """One bulk job: rows, and when it was sent and finished (epoch seconds, one clock)."""

    job_id: str
    rows: int
    sent: float
    finished: float

    @property
    def seconds(self) -> float:
        return self.finished - self.sent

    @property
    def rows_s(self) -> float:
        return self.rows / max(1e-9, self.seconds)


@dataclass(frozen=True)
class Interactive:
    """A run of synchronous predicts: the load generator's record, and when it began."""

    load: LoadResult
    since: float  # epoch seconds


class MixedStack:
    """Submit, wait and predict on a stack from predq_stack; keys for the two bulk tenants
    are made here (the stack's own key, tenant `bench`, sends the interactive calls)."""

    def __init__(self, port: int, key: str, engine: Any) -> None:
        from service.tenants.keys import create_key

        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.engine = engine
        with engine.begin() as conn:
            self.keys = {"bench": key, **{t: create_key(conn, t)
                                          for t in (BIG_TENANT, SMALL_TENANT)}}
        rows = np.random.default_rng(2).standard_normal((500, 1, 20)).round(6)
        self.bodies = [json.dumps({"inputs": r.tolist()}).encode() for r in rows]

    def _auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def submit(self, tenant: str, model: str, name: str) -> tuple[str, float]:
        """A bulk job of the file `name` under the data root: (job id, epoch time sent)."""
        sent = time.time()
        answer = requests.post(f"{self.base}/v1/jobs", headers=self._auth(tenant), timeout=60,
                               json={"model": model, "input": name, "priority": "bulk"})
        if answer.status_code != 202:
            raise ScenarioError(f"{tenant}'s job of {name} refused: {answer.status_code} "
                                f"{answer.text[:300]}")
        return str(answer.json()["id"]), sent

    def _row(self, job_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(
                "SELECT status, extract(epoch FROM finished_at), started_at IS NOT NULL, error "
                "FROM jobs WHERE id = :id"), {"id": job_id}).one()

    def wait(self, job_id: str, sent: float, rows: int, timeout_s: float) -> JobRun:
        """Poll the result store until the job succeeds; ScenarioError if it ends otherwise
        or is not final within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, finished, _, error = self._row(job_id)
            if status == "succeeded":
                return JobRun(job_id, rows, sent, float(finished))
            if status in FINAL:
                raise ScenarioError(f"job {job_id} ({rows} rows) {status}: {error}")
            time.sleep(POLL_S)
        raise ScenarioError(f"job {job_id} ({rows} rows) not final after {timeout_s:g} s")

    def wait_started(self, job_id: str, timeout_s: float) -> None:
        """Until a worker has started the job (ScenarioError if it ends first or never)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, _, started, error = self._row(job_id)
            if status in FINAL:
                raise ScenarioError(f"job {job_id} ended ({status}: {error}) before it was seen "
                                    "running: the bulk job is too short to measure beside")
            if started:
                return
            time.sleep(POLL_S)
        raise ScenarioError(f"job {job_id} not started after {timeout_s:g} s")

    def run_job(self, tenant: str, model: str, name: str, rows: int, timeout_s: float
                ) -> JobRun:
        """Submit and wait: submit-to-done time of one job."""
        job_id, sent = self.submit(tenant, model, name)
        return self.wait(job_id, sent, rows, timeout_s)

    def interactive(self, seconds: float, rate: float) -> Interactive:
        """One-row synchronous predicts at `rate` per second for `seconds`, open loop (a
        request's latency counts from its due time; enough connections that a slow answer
        delays no send)."""
        since = time.time()
        load = run_load(f"/v1/models/bench/predict?timeout={SYNC_TIMEOUT_S}", "127.0.0.1",
                        self.port, lambda i: self.bodies[i % len(self.bodies)],
                        {"Content-Type": "application/json", **self._auth("bench")},
                        max(1, int(rate * seconds)), int(rate * SYNC_TIMEOUT_S) + 1,
                        seconds + SYNC_TIMEOUT_S + 10, rate=rate)
        return Interactive(load, since)

    def figures(self, calls: Interactive, until: float = math.inf) -> dict[str, Any]:
        """Latencies of the calls sent before `until` (epoch seconds), and their jobs' queue
        wait (created to started) and run time (started to finished) from the result store."""
        load = calls.load
        kept = [i for i, at in enumerate(load.sent_at) if at <= until]
        latencies = [load.latencies_ms[i] for i in kept]
        with self.engine.connect() as conn:
            times = conn.execute(text(
                "SELECT extract(epoch FROM started_at - created_at) * 1000, "
                "extract(epoch FROM finished_at - started_at) * 1000 FROM jobs "
                "WHERE tenant = 'bench' AND created_at >= to_timestamp(:since) "
                "AND created_at <= to_timestamp(:until) AND finished_at IS NOT NULL"),
                {"since": calls.since, "until": min(until, 4e9)}).all()
        waits, runs = [float(w) for w, _ in times], [float(r) for _, r in times]
        # Requests that got no answer at all (connection errors) count wherever they were sent.
        unanswered = sum(n for status, n in load.statuses.items() if not status.isdigit())
        return {
            "n": len(kept), "not_200": unanswered + sum(1 for i in kept if load.codes[i] != 200),
            "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
            "max_ms": round(max(latencies, default=math.nan), 1),
            "queue_wait_p50_ms": pct(waits, 50), "queue_wait_p99_ms": pct(waits, 99),
            "run_p50_ms": pct(runs, 50),
        }

    def warm_up(self, model: str, name: str, rows: int, timeout_s: float) -> None:
        """Connections, pools and the by-reference path of both tenants, before measuring."""
        self.interactive(2.0, 25.0)  # figures not wanted
        sent = [self.submit(t, model, name) for t in (BIG_TENANT, SMALL_TENANT)]
        for job_id, at in sent:
            self.wait(job_id, at, rows, timeout_s)
