"""CPU accounting of one measured run: the system under test, Redis/PostgreSQL, and the rest."""

from __future__ import annotations

import time
from typing import Any

import psutil

from bench.procs import TreeSampler


def infra_cpu_seconds() -> float:
    """User+sys CPU seconds of the local redis-server and postgres processes (read-only)."""
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        name = p.info["name"] or ""
        if name.startswith("redis-server") or name.startswith("postgres"):
            t = p.info["cpu_times"]
            if t is not None:
                total += t.user + t.system
    return total


def machine_busy_cpu_seconds() -> float:
    """Busy (non-idle, non-iowait) CPU seconds of the whole machine since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


class CpuMeter:
    """CPU seconds of the `api` and `worker` trees, Redis+PostgreSQL, and anything else, between
    start() and figures(); anything else above ~1 s marks a noisy run."""

    def __init__(self, sampler: TreeSampler) -> None:
        self.sampler = sampler

    def start(self) -> CpuMeter:
        self.sampler.reset_peak()
        self.api0 = self.sampler.cpu_seconds("api")
        self.wrk0 = self.sampler.cpu_seconds("worker")
        self.infra0 = infra_cpu_seconds()
        self.busy0 = machine_busy_cpu_seconds()
        self.own0 = time.process_time()
        return self

    def figures(self, jobs_done: int) -> dict[str, Any]:
        api_s = self.sampler.cpu_seconds("api") - self.api0
        wrk_s = self.sampler.cpu_seconds("worker") - self.wrk0
        infra_s = infra_cpu_seconds() - self.infra0
        own_s = time.process_time() - self.own0
        other_s = machine_busy_cpu_seconds() - self.busy0 - api_s - wrk_s - infra_s - own_s
        per_1000 = 1000 / max(1, jobs_done)
        return {
            "rss_mb_api": self.sampler.peak_rss_mb("api"),
            "rss_mb_worker": self.sampler.peak_rss_mb("worker"),
            "cpu_s_per_1000_jobs": round((api_s + wrk_s) * per_1000, 2),
            "cpu_s_per_1000_jobs_by_part": {
                "api": round(api_s * per_1000, 2),
                "worker": round(wrk_s * per_1000, 2),
                "redis_pg": round(infra_s * per_1000, 2),
            },
            "other_cpu_s_during_run": round(other_s, 2),
        }
