"""The HTTP floor: predq's own server configuration (the `predq api` command line: server,
worker class and count, its config file) serving a trivial route that touches neither SQL nor
Redis, driven by the same load generator with the same bodies as the single-row scenario. What
predq's single-row figures are measured against: `single_row_lr.vs_floor`."""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any

import numpy as np

from bench.loadgen import run_load
from bench.procs import ProcSet, TreeSampler, wait_http, wait_quiet
from bench.run_baseline import REPO, free_port, pct


def floor_command(port: int) -> list[str]:
    """`predq api`'s command line with the floor's app in place of predq's."""
    from service.cli.processes import api_command
    from service.core.settings import Settings

    argv = api_command(Settings.from_env(port=port))
    return [sys.executable, *["bench.floor_app:app" if a == "service.api.wsgi:app" else a
                              for a in argv]]


def bench_floor(n: int, concurrency: int, quick: bool) -> dict[str, Any]:
    """n single-row POSTs with `concurrency` clients against the floor app; requests/s."""
    with tempfile.TemporaryDirectory(prefix="predq-floor-") as tmp:
        port = free_port()
        env = {"PYTHONPATH": REPO, "PREDQ_VAR_DIR": tmp}
        data = np.random.default_rng(1).standard_normal((n + 50, 1, 20))
        bodies = [json.dumps({"model": "bench", "inputs": block.round(6).tolist()}).encode()
                  for block in data]
        headers = {"Content-Type": "application/json", "Authorization": "Bearer floor"}
        with ProcSet(log_dir=tmp) as ps:
            api = ps.start("api", floor_command(port), env, cwd=REPO)
            wait_http("127.0.0.1", port, "/", 30, [api])
            run_load("/v1/jobs", "127.0.0.1", port, lambda i: bodies[n + i % 50], headers, 50,
                     concurrency, 30)
            busy_before = wait_quiet(15.0, 60.0)
            with TreeSampler([api]) as sampler:
                cpu0 = sampler.cpu_seconds("api")
                load = run_load("/v1/jobs", "127.0.0.1", port, bodies.__getitem__, headers, n,
                                concurrency, 60.0 if quick else 300.0)
                cpu_s = sampler.cpu_seconds("api") - cpu0
    span = max(1e-9, load.finished - load.started)
    ok = load.statuses.get("202", 0)
    return {
        "req_s": round(ok / span, 1), "n": n, "ok": ok, "concurrency": concurrency,
        "p50_ms": pct(load.latencies_ms, 50), "p99_ms": pct(load.latencies_ms, 99),
        "cpu_ms_per_request": round(cpu_s * 1000 / max(1, len(load.latencies_ms)), 3),
        "statuses": dict(load.statuses), "machine_busy_pct_before": busy_before,
        "command": " ".join(floor_command(port)[1:]),
    }


if __name__ == "__main__":
    print(json.dumps(bench_floor(int(sys.argv[1]) if len(sys.argv) > 1 else 5000, 32, True),
                     indent=2))
