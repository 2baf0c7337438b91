"""Run predq (gunicorn API + Celery worker on Redis + PostgreSQL) under load; report its figures."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import redis
from sqlalchemy import create_engine, text

from bench.loadgen import run_load
from bench.measure import CpuMeter
from bench.models import example_of, write_models
from bench.procs import ProcSet, TreeSampler, wait_http, wait_log, wait_quiet
from bench.run_baseline import REPO, free_port, pct

ADMIN_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DB_NAME = os.environ.get("BENCH_DB_NAME", "predq_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def fresh_database() -> str:
    """Drop and create the benchmark database; return its URL (migrated to head)."""
    from migrations.runner import upgrade

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DB_NAME}"))
    admin.dispose()
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
    upgrade(url)
    return url


def setup(url: str, model_path: str, model_dir: str, others: dict[str, str] | None = None,
          example: Any = None) -> str:
    """Register the model as `bench` version 1 (with its input `example`, if any; and each of
    `others`, name: path, under its name) and return a new API key of tenant `bench`."""
    from service.models.registry import add_model
    from service.store.db import make_engine
    from service.tenants.keys import create_key

    engine = make_engine(url)
    with engine.begin() as conn:
        add_model(conn, model_dir, model_path, "bench", "1", example=example)
        for name, path in (others or {}).items():
            add_model(conn, model_dir, path, name, "1")
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
def predq_stack(model: str, extra_env: dict[str, str] | None = None, beat: bool = False,
                others: tuple[str, ...] = ()) -> Iterator[tuple[int, str, Any, Any, Any]]:
    """A fresh database, `bench` registered, gunicorn API and a worker: (port, key, engine,
    api process, worker process). With `beat`, also the beat that runs the reconciler (and
    its promotion of waiting jobs), as `predq up` does; `others`: more models of
    bench.models registered under their own names before the worker preloads them."""
    with tempfile.TemporaryDirectory(prefix="predq-bench-") as tmp:
        url = fresh_database()
        paths = write_models(tmp, [model, *others])
        key = setup(url, paths[model], os.path.join(tmp, "models"),
                    {name: paths[name] for name in others}, example_of(model))
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
            if beat:
                ps.start("beat", [sys.executable, "-m", "service.cli", "beat"], env, cwd=REPO)
            wait_http("127.0.0.1", port, "/healthz", 30, [api, worker])
            wait_log(worker, "ready.", 60)
            yield port, key, engine, api, worker
        engine.dispose()


def numeric_bodies(count: int, rows: int) -> list[bytes]:
    """`count` JSON job bodies of `rows` rows of 20 numbers each."""
    data = np.random.default_rng(1).standard_normal((count, rows, 20))
    return [json.dumps({"model": "bench", "inputs": block.round(6).tolist()}).encode()
            for block in data]


def bench_predq(
    n: int,
    concurrency: int,
    quick: bool,
    model: str = "lr",
    rows: int = 1,
    quiet_wait_s: float = 60.0,
    rate: float | None = None,
    extra_env: dict[str, str] | None = None,
    make_bodies: Callable[[int, int], list[bytes]] = numeric_bodies,
) -> dict[str, Any]:
    """n jobs of `rows` rows each through HTTP with `concurrency` clients; returns the figures.

    `rate` (jobs/s) paces an open-loop load; without it every client sends as fast as it can.
    `make_bodies(count, rows)` writes the job bodies (the model's rows), numbers by default.
    """
    with predq_stack(model, extra_env) as (port, key, engine, api, worker):
        bodies = make_bodies(n + 50, rows)
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
