"""`make cluster`: predq on a small network of hosts on this machine (network namespaces on a
private bridge, tests/support/netns.py), loaded through a real load balancer while the network
fails under it; nothing may be lost, nothing may happen twice.

Hosts: `redis1` and `redis2` (a Redis master and its replica, a sentinel on each), `pg1` and
`pg2` (a PostgreSQL primary and its synchronous standby), `lb` (HAProxy, health-checking
`/readyz`, and the third sentinel), `api1` and `api2` (`predq api`), `w1` (`predq worker`, the
deliverer and beat), `w2` and `w3` (`predq worker`; `w3` does not see the shared model
directory, so it fetches every artifact from the store by sha256) and `client` (this process:
the load and the webhook receiver). Every process reaches Redis through the sentinels and
PostgreSQL through a URL naming both servers (tests/support/ha.py). The full run first
measures how the work spreads over 1, 2 and 3 worker hosts (tests/cluster_scaling.py). Then the
mixed load of `make chaos` (tests/chaos.py: single-row, 50-row, synchronous, webhook,
Idempotency-Key and bulk CSV jobs) goes through the balancer while a worker host's link is cut
for longer than its lease mid-batch and restored (its late writes must be fenced), `api1` is
partitioned from Redis, then from PostgreSQL, the Redis master's host dies (Sentinel promotes
the replica; what Redis had not replicated, the reconciler sends again), the PostgreSQL
primary's host dies (the standby is promoted by the runbook of docs/production.md), and `api2`
dies (the balancer routes around it). Every accepted job is checked as `make chaos` checks it,
and each failover's recovery is timed: from the primary's death until the jobs submitted
meanwhile, and the first one after, have finished. Needs root.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import chaos
from tests.support import netns, pgserver
from tests.support.cluster import API_HOSTS, LEASE, WORKER_HOSTS, Cluster

FAILOVERS = 2  # the Redis master's host and the PostgreSQL primary's host die, in every run
FAILOVER_GOAL = 15.0  # seconds from a primary's death until jobs finish again (issue 31)


def run(quick: bool, keep: bool = False) -> dict[str, Any]:
    if not (netns.available() and pgserver.available() and shutil.which("haproxy")):
        raise SystemExit("cluster needs root, iproute2, PostgreSQL server binaries and haproxy")
    workdir = Path(tempfile.mkdtemp(prefix="predq-cluster-"))
    net = netns.Network()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(net, workdir)
        cluster.boot()
        cluster.start_apis()
        scaling: list[dict[str, Any]] = []
        if quick:
            cluster.start_workers(WORKER_HOSTS)
        else:
            from tests.cluster_scaling import series
            scaling = series(cluster, WORKER_HOSTS)
        before = cluster.jobs_per_host()
        figures = mixed_load(cluster, rate=14.0 if quick else 38.0, gap=2.0 if quick else 8.0)
        figures.update(cluster.check_slow_job())
        after = cluster.jobs_per_host()
        fetched = list((workdir / "w3" / "models").glob("*.joblib"))
        figures.update(
            workdir=str(workdir), scaling=scaling, hosts=len(net.hosts),
            balancer=cluster.balancer(),
            partitions=cluster.partitions, w3_fetched_artifacts=len(fetched),
            per_worker_host=[after[h] - before[h] for h in WORKER_HOSTS])
        return figures
    finally:
        if cluster is not None:
            cluster.close()
        net.close()
        if cluster is not None:
            cluster.procs.__exit__(None, None, None)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def mixed_load(cluster: Cluster, rate: float, gap: float) -> dict[str, Any]:
    """tests/chaos.py's load (`rate` requests a second) through the balancer while the faults
    happen; then its checks."""
    steps: list[Callable[[], None]] = [
        cluster.cut_worker_host, lambda: cluster.partition_api("Redis"),
        lambda: cluster.partition_api("PostgreSQL"), cluster.kill_redis_primary,
        cluster.kill_postgres_primary, cluster.kill_api_host]
    failing_over = 2 * 20  # seconds each: a new primary, then a new replica or standby
    duration = len(steps) * gap + (LEASE + 6) + 6 + 6 + failing_over + 3 + gap
    errors: list[BaseException] = []

    def inject() -> None:
        try:
            for step in steps:
                time.sleep(gap)
                step()
        except BaseException as exc:  # noqa: BLE001 - reported, and the run fails
            errors.append(exc)

    faults = threading.Thread(target=inject)
    started = time.monotonic()
    faults.start()
    submitted = chaos.load(cluster, cluster.receiver, int(rate * duration), duration)
    faults.join()
    print(f"  load done after {time.monotonic() - started:.0f} s; settling", flush=True)
    if errors:
        raise RuntimeError(f"fault injection broke: {errors[0]!r}") from errors[0]
    outcome = chaos.settle(cluster, cluster.receiver, submitted, timeout=180)
    outcome.update(faults_injected=len(cluster.faults),
                   run_s=round(time.monotonic() - started, 1),
                   failovers=[{"store": f.store, "host": f.host,
                               "new_primary_after_s": round(
                                   (f.replaced - f.died).total_seconds(), 1),
                               "recovery_s": f.recovery_s(cluster.engine),
                               "redis_replica_unacked_bytes": f.replica_unacked_bytes}
                              for f in cluster.failovers])
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the faults once under a short load, no scaling figures (for CI)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the hosts' logs (else everything the run made is removed)")
    args = parser.parse_args()
    began = time.monotonic()
    figures = run(args.quick, args.keep)
    print(json.dumps({k: v for k, v in figures.items() if k != "scaling"}, indent=2,
                     default=str))
    for r in figures["recovery"]:
        print(f"  {r['recovery_s']:>6.1f} s  {r['fault']} ({r['jobs_in_flight']} jobs in flight)")
    for f in figures["failovers"]:
        print(f"  {f['store']}: a new primary {f['new_primary_after_s']} s after {f['host']} "
              f"died, jobs finished again after {f['recovery_s']} s"
              + (f" (the replica had not acknowledged {f['redis_replica_unacked_bytes']} bytes)"
                 if f["store"] == "Redis" else ""))
    if figures["scaling"]:
        from tests.cluster_scaling import report
        report(figures["scaling"])
    dup = sum(figures["duplicated"].values())
    recoveries = [f["recovery_s"] for f in figures["failovers"]]
    never = sum(r is None for r in recoveries)  # the jobs after a failover never finished
    slow = [] if args.quick else [r for r in recoveries if r is not None and r > FAILOVER_GOAL]
    bad = (figures["lost"] + figures["wrong"] + figures["webhooks_undelivered"] + dup
           + (not figures["cut_job_right"]) + never + len(slow)
           + (len(recoveries) != FAILOVERS))
    print(f"cluster: took {time.monotonic() - began:.0f} s")
    if bad:
        print("cluster: failed" + (f"; logs in {figures['workdir']}" if args.keep else
                                   " (--keep keeps the hosts' logs)"), file=sys.stderr)
    print(f"cluster: hosts={figures['hosts']} api_hosts={len(API_HOSTS)} "
          f"worker_hosts={len(WORKER_HOSTS)} "
          f"jobs={figures['jobs_accepted']} lost={figures['lost']} duplicated={dup} "
          f"partitions={figures['partitions']} "
          f"per_worker_host=[{','.join(str(n) for n in figures['per_worker_host'])}] "
          f"failovers={len(recoveries)} "
          f"failover_recovery_s=[{','.join(str(r) for r in recoveries)}]")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
