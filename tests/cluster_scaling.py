"""`make cluster`'s scaling figures: paced single-row jobs through the balancer with 1, 2 and 3
worker hosts, the same total load and the same load per host; jobs/s, CPU per job (every
process on every host but the client, less its idle use) and the p50/p99 of a job's time from
its commit by the API to its result's commit by a worker."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import requests
from sqlalchemy import select, text

from service.core import times
from service.store.db import jobs as jobs_table
from tests.support.ha import PG_HOSTS, REDIS_HOSTS

if TYPE_CHECKING:
    from tests.support.cluster import Cluster

TOLERANCE = 0.20  # CPU per job and p50 with 3 worker hosts: at most 20 % above 1 host


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """User and system CPU seconds so far of every process on each host but the client."""
    total: dict[str, float] = {}
    for host in cluster.net.hosts:
        if host == "client":
            continue
        total[host] = 0.0
        for pid in cluster.net.pids(host):
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total[host] += t.user + t.system
    return total


def _role(host: str) -> str:
    role = host.rstrip("0123456789").replace("w", "worker")
    return "data" if role in ("redis", "pg") else role


def counters(cluster: Cluster) -> dict[str, float]:
    """What the data hosts have done so far: Redis commands (the master's), PostgreSQL
    commits (the primary's), bytes through their links (both ways, replication included)."""
    commands = int(cluster.redis.info("stats")["total_commands_processed"])
    with cluster.engine.connect() as conn:
        commits = conn.execute(text("SELECT sum(xact_commit) FROM pg_stat_database")).scalar()
    link_bytes = 0
    for host in (*REDIS_HOSTS, *PG_HOSTS):
        link = json.loads(subprocess.run(
            ["ip", "-n", cluster.net.hosts[host].netns, "-s", "-j", "link", "show", "eth0"],
            capture_output=True, text=True, check=True).stdout)[0]["stats64"]
        link_bytes += link["rx"]["bytes"] + link["tx"]["bytes"]
    return {"redis_commands": commands, "pg_commits": float(commits or 0),
            "data_link_bytes": link_bytes}


def _offer(cluster: Cluster, rows: np.ndarray, rate: float) -> list[str]:
    """Submit each row as a single-row job, `rate` a second, through the balancer."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {cluster.key}"
    start = time.monotonic()

    def submit(i: int) -> str:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        answer = http.post(cluster.url("/v1/jobs"), timeout=30,
                           json={"model": "iris", "inputs": [rows[i].tolist()]})
        answer.raise_for_status()
        return str(answer.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(submit, range(len(rows))))


def _finished(cluster: Cluster, ids: list[str]) -> list[Any]:
    """Wait (at most 2 minutes) until the jobs are final; their rows."""
    deadline = time.monotonic() + 120
    while True:
        with cluster.engine.connect() as conn:
            found = conn.execute(select(jobs_table.c.created_at, jobs_table.c.finished_at)
                                 .where(jobs_table.c.id.in_(ids))).all()
        if all(r.finished_at is not None for r in found) or time.monotonic() > deadline:
            return [r for r in found if r.finished_at is not None]
        time.sleep(0.2)


def measure(cluster: Cluster, hosts: tuple[str, ...], rate: float, seconds: float
            ) -> dict[str, Any]:
    """Offer `rate` single-row jobs/s for `seconds` and wait for all: what it cost. A short
    warm-up first (a new host loads, or fetches, its models), then the cluster's idle CPU over
    3 s, which is taken off: CPU per job is what the jobs added."""
    n = int(rate * seconds)
    rng = np.random.default_rng(len(hosts))
    rows = rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], (n + int(2 * rate), 4)).round(2)
    _finished(cluster, _offer(cluster, rows[n:], rate))
    time.sleep(1.0)
    idle_from, idle_at = cpu_seconds(cluster), time.monotonic()
    time.sleep(3.0)
    idle_to, idled = cpu_seconds(cluster), time.monotonic() - idle_at
    before, cpu_before, data_before = cluster.jobs_per_host(), cpu_seconds(cluster), \
        counters(cluster)
    began = time.monotonic()
    done = _finished(cluster, _offer(cluster, rows[:n], rate))
    took = time.monotonic() - began
    cpu_after = cpu_seconds(cluster)
    by_role: dict[str, float] = {}
    for host, seconds_then in cpu_before.items():
        idle = (idle_to[host] - idle_from[host]) / idled
        by_role[_role(host)] = by_role.get(_role(host), 0.0) + (
            cpu_after[host] - seconds_then - idle * took) * 1000 / n
    idle_cores = sum(idle_to.values()) - sum(idle_from.values())
    idle_cores /= idled
    data = {k: (v - data_before[k]) / n for k, v in counters(cluster).items()}
    time.sleep(2.5)  # the next heartbeat carries the last batches' counts (every 2 s or so)
    after = cluster.jobs_per_host()
    latency = np.array([(times.as_utc(r.finished_at) - times.as_utc(r.created_at))
                        .total_seconds() for r in done]) * 1000
    span = (max(times.as_utc(r.finished_at) for r in done)
            - min(times.as_utc(r.created_at) for r in done)).total_seconds()
    return {"worker_hosts": len(hosts), "jobs": n, "finished": len(done),
            "jobs_s": round(len(done) / span, 1), "cpu_ms_per_job": round(sum(by_role.values()), 2),
            "cpu_ms_per_job_by_role": {k: round(v, 2) for k, v in by_role.items()},
            "idle_cores": round(idle_cores, 2),
            "p50_ms": round(float(np.percentile(latency, 50)), 1),
            "p99_ms": round(float(np.percentile(latency, 99)), 1),
            "per_host": [after[h] - before[h] for h in ("w1", "w2", "w3")][:len(hosts)],
            "redis_commands_per_job": round(data["redis_commands"], 1),
            "pg_commits_per_job": round(data["pg_commits"], 2),
            "data_link_bytes_per_job": round(data["data_link_bytes"])}


def series(cluster: Cluster, hosts: tuple[str, ...], rate: float = 20, seconds: float = 20
           ) -> list[dict[str, Any]]:
    """Start the worker hosts one by one; with each number of them, `rate` jobs/s in all
    (`same total`) and, from two hosts on, `rate` jobs/s for each (`same per host`)."""
    rows = []
    for n in range(1, len(hosts) + 1):
        cluster.start_workers((hosts[n - 1],))
        for mode, offered in (("same total", rate), ("same per host", rate * n)):
            if n == 1 and mode == "same per host":
                continue
            rows.append({"load": mode, **measure(cluster, hosts[:n], offered, seconds)})
            print(f"  measured: {rows[-1]}", flush=True)
    return rows


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """What does not hold: CPU per job and p50 with the most hosts against one host, and
    every host taking a share of the work."""
    one, most = rows[0], rows[-1]
    problems = [f"{what} {most[what]} with {most['worker_hosts']} hosts is more than "
                f"{TOLERANCE:.0%} above {one[what]} with 1"
                for what in ("cpu_ms_per_job", "p50_ms")
                if most[what] > (1 + TOLERANCE) * one[what]]
    share = min(most["per_host"]) / max(1, sum(most["per_host"]))
    if share < 0.5 / len(most["per_host"]):
        problems.append(f"the load did not spread: {most['per_host']}")
    return problems


def report(measured: list[dict[str, Any]]) -> None:
    """The two tables (same total load, same load per host) and the verdict on the first."""
    for mode in ("same total", "same per host"):
        rows = [r for r in measured if r["load"] == mode or r["worker_hosts"] == 1]
        print(f"{mode} load:")
        _table(rows)
    problems = verdict([r for r in measured if r["load"] == "same total"])
    print("scaling: " + ("; ".join(problems) if problems else
                         f"CPU per job and p50 at most {TOLERANCE:.0%} above one host's; "
                         "the load spread"))


def _table(rows: list[dict[str, Any]]) -> None:
    print("| worker hosts | jobs | jobs/s | CPU ms/job | of which API / workers / data / "
          "balancer | idle cores | p50 ms | p99 ms | "
          "jobs per host | Redis commands/job | PostgreSQL commits/job | data host bytes/job |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        roles = r["cpu_ms_per_job_by_role"]
        print(f"| {r['worker_hosts']} | {r['jobs']} | {r['jobs_s']} | {r['cpu_ms_per_job']} | "
              f"{' / '.join(str(roles[k]) for k in ('api', 'worker', 'data', 'lb'))} | "
              f"{r['idle_cores']} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {r['per_host']} | "
              f"{r['redis_commands_per_job']} | {r['pg_commits_per_job']} | "
              f"{r['data_link_bytes_per_job']} |")
