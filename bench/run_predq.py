"""Run predq (gunicorn API + Celery worker on Redis + PostgreSQL) under load; report its figures."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import redis
from sqlalchemy import create_engine, text

from bench.loadgen import run_load
from bench.measure import CpuMeter
from bench.models import write_models
from bench.procs import ProcSet, TreeSampler, wait_http, wait_log, wait_quiet
from bench.run_baseline import REPO, free_port, pct

ADMIN_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DB_NAME = os.environ.get("BENCH_DB_NAME", "predq_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def fresh_database() -> str:
    """Drop and create the benchmark database; return its URL (migrated to head)."""
    from service.store.migrate import upgrade

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DB_NAME}"))
    admin.dispose()
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
    upgrade(url)
    return url


def setup(url: str, model_path: str, model_dir: str) -> str:
    """Register the model as `bench` version 1 and return a new API key."""
    from service.models.registry import add_model
    from service.store.db import make_engine
    from service.tenants.keys import create_key

    engine = make_engine(url)
    with engine.begin() as conn:
        add_model(conn, model_dir, model_path, "bench", "1")
        key = create_key(conn, "bench")
    engine.dispose()
    return key


def wait_final(engine: Any, expected: int, timeout_s: float) -> int:
    """Poll until `expected` jobs are final (or timeout); return how many are."""
    deadline, done = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = int(
                conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status NOT IN ('queued', 'running')")
                ).scalar_one()
            )
        if done >= expected:
            break
        time.sleep(0.2)
    return done


@contextlib.contextmanager
def predq_stack(model: str, extra_env: dict[str, str] | None = None,
                ) -> Iterator[tuple[int, str, Any, Any, Any]]:
    """A fresh database, `bench` registered, gunicorn API and a worker: (port, key, engine,
    api process, worker process)."""
    with tempfile.TemporaryDirectory(prefix="predq-bench-") as tmp:
        url = fresh_database()
        key = setup(url, write_models(tmp, [model])[model], os.path.join(tmp, "models"))
        redis.Redis.from_url(REDIS_URL).flushdb()
        port = free_port()
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "PREDQ_PORT": str(port),
            "PREDQ_MODEL_DIR": os.path.join(tmp, "models"),
            "PYTHONPATH": REPO,
            "PREDQ_VAR_DIR": tmp,
            # The throughput runs queue all N jobs at once, on purpose: no back-pressure.
            "PREDQ_MAX_DEPTH_NORMAL": "10000000",
            "PREDQ_TENANT_QUEUE_SHARE": "1.0",
            **(extra_env or {}),
        }
        engine = create_engine(url)
        with ProcSet(log_dir=tmp) as ps:
            api = ps.start("api", [sys.executable, "-m", "service.cli", "api"], env, cwd=REPO)
            worker = ps.start(
                "worker", [sys.executable, "-m", "service.cli", "worker"], env, cwd=REPO
            )
            wait_http("127.0.0.1", port, "/healthz", 30, [api, worker])
            wait_log(worker, "ready.", 60)
            yield port, key, engine, api, worker
        engine.dispose()


def bench_predq(
    n: int,
    concurrency: int,
    quick: bool,
    model: str = "lr",
    rows: int = 1,
    quiet_wait_s: float = 60.0,
    rate: float | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """n jobs of `rows` rows each through HTTP with `concurrency` clients; returns the figures.

    `rate` (jobs/s) paces an open-loop load; without it every client sends as fast as it can.
    """
    with predq_stack(model, extra_env) as (port, key, engine, api, worker):
        n_features = 20
        data = np.random.default_rng(1).standard_normal((n + 50, rows, n_features))
        bodies = [
            json.dumps({"model": "bench", "inputs": block.round(6).tolist()}).encode()
            for block in data
        ]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        warm = run_load(
            "/v1/jobs",
            "127.0.0.1",
            port,
            lambda i: bodies[n + i % 50],
            headers,
            50,
            concurrency,
            30,
        )
        wait_final(engine, sum(1 for i in warm.ids if i), 60)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs"))
        busy_before = wait_quiet(15.0, quiet_wait_s)
        with TreeSampler([api, worker]) as sampler:
            meter = CpuMeter(sampler).start()
            load = run_load("/v1/jobs", "127.0.0.1", port, bodies.__getitem__, headers,
                            n, concurrency, 120.0 if quick else 600.0, rate=rate)
            ids = [i for i in load.ids if i]
            wait_final(engine, len(ids), 180.0 if quick else 900.0)
            out = summarize(engine, load.ids, load.sent_at, load.latencies_ms, rows)
            out.update(meter.figures(out["jobs_completed"]))
            out.update({
                "complete": out["jobs_succeeded"] == n, "model": model, "n": n,
                "rows_per_job": rows, "concurrency": concurrency, "rate": rate,
                "machine_busy_pct_before": busy_before,
            })
    return out


def summarize(
    engine: Any, ids: list[str], sent_at: list[float], latencies: list[float], rows: int
) -> dict[str, Any]:
    """Throughput from first send to last commit; latencies from the client and SQL clocks."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT id, status, extract(epoch FROM finished_at) FROM jobs")
        ).all()
    finished = {r[0]: float(r[2]) for r in found if r[2] is not None}
    succeeded = sum(1 for r in found if r[1] == "succeeded")
    sent = {i: t for i, t in zip(ids, sent_at, strict=True) if i}
    completion = [(finished[i] - sent[i]) * 1000 for i in sent if i in finished]
    span = max(1e-9, max(finished.values(), default=0) - min(sent_at, default=0))
    return {
        "jobs_submitted": len(sent),
        "jobs_completed": len(completion),
        "jobs_succeeded": succeeded,
        "jobs_s": round(len(completion) / span, 1),
        "rows_s": round(len(completion) * rows / span, 1),
        "submit_p50_ms": pct(latencies, 50),
        "submit_p99_ms": pct(latencies, 99),
        "completion_p50_ms": pct(completion, 50),
        "completion_p99_ms": pct(completion, 99),
    }


if __name__ == "__main__":
    print(
        json.dumps(bench_predq(int(sys.argv[1]) if len(sys.argv) > 1 else 3000, 32, True), indent=2)
    )
