"""Run the hand-written baseline (gunicorn + Celery + PostgreSQL) under load; report figures."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from typing import Any

import numpy as np
import redis
from sqlalchemy import create_engine, text

from bench.loadgen import LoadResult, run_load
from bench.measure import CpuMeter
from bench.models import write_models
from bench.procs import ProcSet, TreeSampler, wait_http, wait_log, wait_quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/14")
DATABASE_URL = os.environ.get(
    "BASELINE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TABLE_DDL = (
    "CREATE TABLE baseline_results (id text PRIMARY KEY, prediction double precision, "
    "submitted_at timestamptz, created_at timestamptz DEFAULT now(), "
    "finished_at timestamptz DEFAULT now())"
)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """q-th percentile (0..100) of values, rounded to 0.01; nan when empty."""
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def reset_state(engine: Any) -> None:
    """Drop/recreate the results table and flush the baseline's Redis db."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS baseline_results"))
        conn.execute(text(TABLE_DDL))
    redis.Redis.from_url(REDIS_URL).flushdb()


def wait_rows(engine: Any, expected: int, timeout_s: float) -> int:
    """Poll until baseline_results has `expected` rows or timeout_s passes.

    Returns the last count.
    """
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            count = int(conn.execute(text("SELECT count(*) FROM baseline_results")).scalar_one())
        if count >= expected:
            break
        time.sleep(0.2)
    return count


def make_bodies(n: int, n_features: int = 20) -> list[bytes]:
    """n precomputed single-row JSON request bodies (so the load loop does no encoding work)."""
    rows = np.random.default_rng(1).standard_normal((n, n_features)).round(6).tolist()
    return [json.dumps({"inputs": [r]}).encode() for r in rows]


def summarize(engine: Any, load: LoadResult, wall_s: float) -> dict[str, Any]:
    """Throughput and latency figures from the client's record and the DB timestamps."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, extract(epoch FROM submitted_at), extract(epoch FROM finished_at) "
                "FROM baseline_results"
            )
        ).all()
    finished = {r[0]: float(r[2]) for r in rows}
    api_submit = {r[0]: float(r[1]) for r in rows}
    sent = {i: t for i, t in zip(load.ids, load.sent_at, strict=False) if i}
    completion = [(finished[i] - sent[i]) * 1000 for i in sent if i in finished]
    api_completion = [(finished[i] - api_submit[i]) * 1000 for i in sent if i in finished]
    first_submit = min(load.sent_at) if load.sent_at else load.started
    last_done = max(finished.values()) if finished else first_submit
    span = max(1e-9, last_done - first_submit)
    submit_span = max(1e-9, load.finished - load.started)
    n_ok = len(sent)
    return {
        "jobs_submitted": n_ok,
        "jobs_completed": len(completion),
        "jobs_s": round(len(completion) / span, 1),
        "submit_rps": round(n_ok / submit_span, 1),
        "submit_p50_ms": pct(load.latencies_ms, 50),
        "submit_p99_ms": pct(load.latencies_ms, 99),
        "completion_p50_ms": pct(completion, 50),
        "completion_p99_ms": pct(completion, 99),
        "completion_from_api_p50_ms": pct(api_completion, 50),
        "statuses": dict(load.statuses),
        "wall_s": round(wall_s, 2),
    }


def bench_baseline(
    n: int = 3000,
    concurrency: int = 16,
    quick: bool = True,
    model: str = "lr",
    impl: str = "asyncio",
    quiet_wait_s: float = 60.0,
) -> dict[str, Any]:
    """Run n single-row jobs through the baseline with `concurrency` clients.

    Returns the figures dict.

    Before the load it waits up to quiet_wait_s for the (shared) machine to be idle.
    """
    engine = create_engine(DATABASE_URL)
    load_deadline_s = 120.0 if quick else 600.0
    drain_timeout_s = 180.0 if quick else 900.0
    with tempfile.TemporaryDirectory(prefix="predq-baseline-") as tmp:
        model_path = write_models(tmp, [model])[model]
        reset_state(engine)
        port = free_port()
        env = {
            "BASELINE_MODEL_PATH": model_path,
            "BASELINE_REDIS_URL": REDIS_URL,
            "BASELINE_DATABASE_URL": DATABASE_URL,
            "PYTHONPATH": REPO,
        }
        with ProcSet(log_dir=tmp) as ps:
            api = ps.start(
                "api",
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-w",
                    "2",
                    "--threads",
                    "8",
                    "-k",
                    "gthread",
                    "-b",
                    f"127.0.0.1:{port}",
                    "bench.baseline.app:app",
                ],
                env,
                cwd=REPO,
            )
            worker = ps.start(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.baseline.tasks",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    "2",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                env,
                cwd=REPO,
            )
            wait_http("127.0.0.1", port, "/health", 30, [api, worker])
            wait_log(worker, "ready.", 60)
            bodies = make_bodies(n + 50)
            headers = {"Content-Type": "application/json"}
            # Warm-up: open broker/DB connections in every process, then start from an empty table.
            run_load(
                "/predict",
                "127.0.0.1",
                port,
                lambda i: bodies[n + i % 50],
                headers,
                50,
                concurrency,
                30,
            )
            wait_rows(engine, 50, 30)
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE baseline_results"))
            busy_before = wait_quiet(15.0, quiet_wait_s)
            with TreeSampler([api, worker]) as sampler:
                meter, t0 = CpuMeter(sampler).start(), time.monotonic()
                load = run_load(
                    "/predict",
                    "127.0.0.1",
                    port,
                    bodies.__getitem__,
                    headers,
                    n,
                    concurrency,
                    load_deadline_s,
                    impl,
                )
                expected = sum(1 for i in load.ids if i)
                wait_rows(engine, expected, drain_timeout_s)
                out = summarize(engine, load, time.monotonic() - t0)
                out.update(meter.figures(out["jobs_completed"]))
                out.update(
                    {
                        "complete": out["jobs_completed"] == n,
                        "machine_busy_pct_before": busy_before,
                        "model": model,
                        "n": n,
                        "concurrency": concurrency,
                        "loadgen": impl,
                        "loadgen_cpu_us_per_request": round(
                            load.client_cpu_s / max(1, len(load.latencies_ms)) * 1e6, 1
                        ),
                    }
                )
    engine.dispose()
    return out


def main() -> None:
    """CLI: python -m bench.run_baseline [--quick] [-n N] [-c C] [--models lr,rf] prints JSON."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("-n", type=int, default=None)
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--models", default="lr,rf")
    ap.add_argument("--loadgen", default="asyncio", choices=["asyncio", "threads"])
    ap.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max s to wait for an idle machine"
    )
    args = ap.parse_args()
    n = args.n or (3000 if args.quick else 20000)
    results = {
        m: bench_baseline(n, args.concurrency, args.quick, m, args.loadgen, args.quiet_wait)
        for m in args.models.split(",")
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
