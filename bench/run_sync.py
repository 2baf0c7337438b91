"""Synchronous predict (POST /v1/models/bench/predict): latency at light load, then open-loop
rate steps to find the highest rate at which p99 stays under 100 ms."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.loadgen import run_load
from bench.run_baseline import pct
from bench.run_predq import predq_stack

P99_LIMIT_MS = 100.0


def _step(port: int, headers: dict[str, str], bodies: list[bytes], rate: float,
          seconds: float) -> dict[str, Any]:
    n = int(rate * seconds)
    load = run_load("/v1/models/bench/predict?timeout=5", "127.0.0.1", port,
                    lambda i: bodies[i % len(bodies)], headers, n, 64, seconds + 30, rate=rate)
    span = max(1e-9, load.finished - load.started)
    ok = load.statuses.get("200", 0)
    return {
        "rate": rate, "n": n, "ok": ok, "answered_s": round(ok / span, 1),
        "not_200": n - ok, "statuses": dict(load.statuses), "p50_ms": pct(load.latencies_ms, 50),
        "p99_ms": pct(load.latencies_ms, 99),
    }


def bench_sync(quick: bool, model: str = "lr") -> dict[str, Any]:
    """Light load first (20 requests/s), then rising rates until p99 passes 100 ms."""
    rates = (100, 200, 400) if quick else (100, 200, 300, 400, 500, 600, 800, 1000)
    seconds = 3.0 if quick else 8.0
    with predq_stack(model) as (port, key, _engine, _api, _worker):
        rows = np.random.default_rng(2).standard_normal((500, 1, 20)).round(6)
        bodies = [json.dumps({"inputs": r.tolist()}).encode() for r in rows]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        _step(port, headers, bodies, 50, 2.0)  # warm-up: connections, model, pools
        light = _step(port, headers, bodies, 20, 5.0 if quick else 15.0)
        steps = []
        for rate in rates:
            steps.append(_step(port, headers, bodies, rate, seconds))
            if steps[-1]["p99_ms"] > 2 * P99_LIMIT_MS or steps[-1]["not_200"]:
                break
    within = [s for s in steps if s["p99_ms"] < P99_LIMIT_MS and not s["not_200"]]
    return {
        "model": model,
        "light_load": light,
        "steps": steps,
        "max_rate_p99_under_100ms": max((s["rate"] for s in within), default=None),
        "answered_s_at_that_rate": max((s["answered_s"] for s in within), default=None),
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(bench_sync("--quick" in sys.argv), indent=2))
