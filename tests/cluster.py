"""`make cluster`: predq on a small network of hosts on this machine (network namespaces on a
private bridge, tests/support/netns.py), loaded through a real load balancer while the network
fails under it; nothing may be lost, nothing may happen twice.

Hosts: `data` (Redis on its first address, PostgreSQL on its second), `lb` (HAProxy,
health-checking `/readyz`), `api1` and `api2` (`predq api`), `w1` (`predq worker`, the
deliverer and beat), `w2` and `w3` (`predq worker`; `w3` does not see the shared model
directory, so it fetches every artifact from the store by sha256) and `client` (this process:
the load and the webhook receiver). The full run first measures how the work spreads over 1, 2
and 3 worker hosts (tests/cluster_scaling.py). Then the mixed load of `make chaos`
(tests/chaos.py: single-row, 50-row, synchronous, webhook, Idempotency-Key and bulk CSV jobs)
goes through the balancer while a worker host's link is cut for longer than its lease mid-batch
and restored (its late writes must be fenced), `api1` is partitioned from Redis, then from
PostgreSQL, and `api2` dies (the balancer routes around it). Every accepted job is checked as
`make chaos` checks it. Needs root.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import redis
import requests

from bench.procs import Proc, ProcSet, wait_http, wait_log
from service.cli.demo import register_demo_models
from service.cli.embedded import redis_binary
from service.core import times
from service.core.settings import Settings
from service.models.registry import add_model
from service.ops import heartbeats
from service.store.db import make_engine
from service.store.migrate import upgrade
from service.tenants import keys
from tests import chaos
from tests.support import netns, pgserver
from tests.support.sleepy import train_sleepy

ROOT = str(Path(__file__).resolve().parent.parent)
PY = sys.executable
WORKER_HOSTS = ("w1", "w2", "w3")
API_HOSTS = ("api1", "api2")
LEASE = 4  # seconds: a cut longer than this hands the host's jobs to another

HAPROXY = """global
    maxconn 4000
    stats socket {workdir}/haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 90s
    timeout server 90s
    timeout check 2s
    retries 2
    option redispatch
frontend predq
    bind {address}:80
    default_backend api
backend api
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
{servers}
"""


class Cluster:
    """The hosts, what runs on them, and the faults done to them. It offers what tests/chaos.py
    needs of a system under test (`chaos.Target`)."""

    def __init__(self, net: netns.Network, workdir: Path, receiver_port: int | None = None
                 ) -> None:
        self.net, self.workdir = net, workdir
        for name, n in (("data", 2), ("lb", 1), *((h, 1) for h in (*API_HOSTS, *WORKER_HOSTS)),
                        ("client", 1)):
            net.add(name, n)
        net.enter("client")  # this process is the client host from here on
        self.receiver = chaos.Receiver(net.hosts["client"].address)
        redis_address, pg_address = net.hosts["data"].addresses
        self.procs = ProcSet(log_dir=str(workdir))
        self.pg = pgserver.PrivatePostgres(pg_address, 5432,
                                           ("ip", "netns", "exec", net.hosts["data"].netns))
        self.redis_proc = self.procs.start("redis", net.argv("data", [
            redis_binary(), "--bind", redis_address, "--port", "6379", "--protected-mode", "no",
            "--save", "", "--appendonly", "no", "--dir", str(workdir)]))
        self.pg.start("max_connections=200")
        self.settings = Settings.from_env(
            {}, database_url=self.pg.url, redis_url=f"redis://{redis_address}:6379/0",
            var_dir=str(workdir / "var"), model_dir=str(workdir / "models"), port=8000,
            bulk_chunk_rows=500, secret_key=chaos._secret(), lease_seconds=LEASE,
            worker_concurrency=1, webhook_timeout=5.0,
            webhook_allow_hosts=f"{self.receiver.host}:{self.receiver.port}",
            webhook_retry_schedule="0.5,1,2,4,8,15,30,60")
        self.redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5)
        _until(lambda: self.redis.ping(), 10, "Redis on the data host")
        upgrade(self.settings.database_url)
        self.engine = make_engine(self.settings.database_url, pool_pre_ping=True)
        with self.engine.begin() as conn:
            register_demo_models(conn, self.settings.model_dir, workdir / "train")
            add_model(conn, self.settings.model_dir,
                      str(train_sleepy(workdir / "train" / "sleepy.joblib")), "sleepy", "1")
            self.key = keys.create_key(conn, "cluster")
        self.model = joblib.load(workdir / "train" / "iris.joblib")
        self.faults: list[chaos.Fault] = []
        self.partitions = 0
        self.slow_job: tuple[str, np.ndarray] | None = None  # the job cut mid-chunk
        self.mid_batch = False
        self.uploading = threading.Event()
        self.apis: dict[str, Proc] = {}
        self.workers: dict[str, Proc] = {}
        self.lb = net.hosts["lb"].address

    # -- chaos.Target ---------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://{self.lb}{path}"

    # -- processes ------------------------------------------------------------------------
    def env(self, host: str, **extra: str) -> dict[str, str]:
        home = self.workdir / host
        return {**self.settings.env(), "PYTHONPATH": ROOT, "PREDQ_VAR_DIR": str(home),
                "PREDQ_METRICS_DIR": str(home / "metrics"), **extra}

    def start(self, host: str, what: str, **extra: str) -> Proc:
        hide = (self.settings.model_dir,) if host == "w3" else ()
        if host == "w3":  # an empty model directory of its own: artifacts come by sha256
            extra["PREDQ_MODEL_DIR"] = str(self.workdir / host / "models")
        return self.procs.start(f"{host}-{what}", self.net.argv(
            host, [PY, "-m", "service.cli", what], hide), self.env(host, **extra), cwd=ROOT)

    def start_apis(self) -> None:
        for host in API_HOSTS:
            self.apis[host] = self.start(host, "api", PREDQ_HOST=self.net.hosts[host].address)
        for host, proc in self.apis.items():
            wait_http(self.net.hosts[host].address, 8000, "/healthz", 90, [proc])
        servers = "\n".join(f"    server {h} {self.net.hosts[h].address}:8000 check"
                            for h in API_HOSTS)
        config = self.workdir / "haproxy.cfg"
        config.write_text(HAPROXY.format(workdir=self.workdir, address=self.lb,
                                         servers=servers))
        self.procs.start("lb-haproxy", self.net.argv("lb", ["haproxy", "-db", "-f",
                                                            str(config)]))
        _until(lambda: self.balancer() == {h: "UP" for h in API_HOSTS}, 30,
               "the balancer to see both API hosts up")

    def start_workers(self, hosts: tuple[str, ...]) -> None:
        started = {h: self.start(h, "worker") for h in hosts}
        if "w1" in hosts:
            started["w1-deliverer"] = self.start("w1", "deliverer")
            self.procs.start("w1-beat", self.net.argv("w1", [PY, "-m", "service.cli", "beat"]),
                             self.env("w1"), cwd=ROOT)
        for name, proc in started.items():
            wait_log(proc, "ready.", 90)
            if not name.endswith("deliverer"):
                self.workers[name] = proc
        if "w1" in hosts:
            answer = requests.post(self.url("/v1/webhooks/job-secret"), timeout=30,
                                   headers={"Authorization": f"Bearer {self.key}"})
            assert answer.status_code in (200, 201), answer.text

    def balancer(self) -> dict[str, str]:
        """What HAProxy thinks of each API host (UP, DOWN, ...)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(self.workdir / "haproxy.sock"))
                s.sendall(b"show stat\n")
                text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        except OSError:
            return {}
        rows = [line.split(",") for line in text.splitlines() if line.startswith("api,")]
        return {r[1]: r[17].split()[0] for r in rows if r[1] in API_HOSTS}

    def jobs_per_host(self) -> dict[str, int]:
        """Jobs each worker host's pool finished, from the workers' heartbeat records."""
        done: Counter[str] = Counter()
        for worker in heartbeats.workers(self.redis):
            if worker.identity.node.startswith("celery@"):
                done[worker.identity.host.removeprefix("pq-")] += worker.jobs_total
        return {h: done[h] for h in WORKER_HOSTS}

    # -- faults ---------------------------------------------------------------------------
    def _fault(self, name: str, kind: str, action: Callable[[], None]) -> None:
        began = times.utcnow()
        action()
        self.faults.append(chaos.Fault(name, kind, began, times.utcnow(), began))
        print(f"  fault done: {name}", flush=True)

    def cut_worker_host(self, host: str = "w3") -> None:
        """Mid-batch: a bulk job of the sleepy model (1.5 s a chunk) runs on every worker
        host; the link is cut while `host` is inside a chunk's predict."""
        rows = np.column_stack([np.full(12 * 500, 1500.0), np.arange(6000.0)])
        body = io.BytesIO()
        np.save(body, rows)
        answer = requests.post(self.url("/v1/jobs?model=sleepy"), data=body.getvalue(),
                               timeout=60, headers={"Authorization": f"Bearer {self.key}",
                                                    "Content-Type": "application/x-npy"})
        assert answer.status_code == 202, answer.text
        self.slow_job = (answer.json()["id"], rows)
        deadline = time.monotonic() + 30
        while not self.mid_batch and time.monotonic() < deadline:
            self.mid_batch = self.predicting(host)
            time.sleep(0.05)

        def act() -> None:
            self.net.cut(host)
            time.sleep(LEASE + 6)
            self.net.restore(host)
        self.partitions += 1
        self._fault(f"cut {host}'s link for {LEASE + 6} s (lease {LEASE} s) mid-chunk, restore it",
                    "worker", act)

    def predicting(self, host: str) -> bool:
        """A process on `host` sleeps in the sleepy model's predict: its main thread is in
        clock_nanosleep (an idle pool process waits in read or poll, Celery's main process in
        epoll_wait)."""
        for pid in self.net.pids(host):
            try:
                call = Path(f"/proc/{pid}/syscall").read_text().split()[0]
            except (OSError, IndexError):
                continue
            if call in ("35", "230"):  # nanosleep, clock_nanosleep (x86-64)
                return True
        return False

    def partition_api(self, what: str, host: str = "api1") -> None:
        redis_address, pg_address = self.net.hosts["data"].addresses
        address = redis_address if what == "Redis" else pg_address

        def act() -> None:
            self.net.partition(host, address)
            time.sleep(6)
            self.net.heal(host, address)
        self.partitions += 1
        self._fault(f"partition {host} from {what} for 6 s", "broker or database", act)

    def kill_api_host(self, host: str = "api2") -> None:
        def act() -> None:
            os.killpg(self.apis[host].pid, signal.SIGKILL)
            self.net.cut(host)
            _until(lambda: self.balancer().get(host) == "DOWN", 15,
                   f"the balancer to mark {host} down")
        self._fault(f"kill API host {host} (processes and link)", "api", act)

    def check_slow_job(self) -> dict[str, Any]:
        """The job whose chunk was cut off: every row once, in order, and the cut host's late
        writes refused (its log says what it discarded)."""
        assert self.slow_job is not None
        job_id, rows = self.slow_job
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.key}"
        _until(lambda: http.get(self.url(f"/v1/jobs/{job_id}"), timeout=30).json()["status"]
               not in ("queued", "running"), 120, "the sleepy bulk job to end")
        got = http.get(self.url(f"/v1/jobs/{job_id}/result"), timeout=60)
        right = got.status_code == 200 and bool(np.allclose(
            got.json()["predictions"], joblib.load(self.workdir / "train" / "sleepy.joblib")
            .predict(rows)))
        fenced = sum(path.read_text(errors="replace").count("discarded")
                     for path in self.workdir.glob("w*-worker.log"))
        return {"cut_mid_chunk": self.mid_batch, "cut_job_right": right,
                "late_writes_fenced": fenced}

    def close(self) -> None:
        self.receiver.close()
        self.engine.dispose()
        self.pg.remove()


def _until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.2)


def run(quick: bool, keep: bool = False) -> dict[str, Any]:
    if not (netns.available() and pgserver.available() and shutil.which("haproxy")):
        raise SystemExit("cluster needs root, iproute2, PostgreSQL server binaries and haproxy")
    workdir = Path(tempfile.mkdtemp(prefix="predq-cluster-"))
    net = netns.Network()
    cluster: Cluster | None = None
    try:
        cluster = Cluster(net, workdir)
        cluster.start_apis()
        scaling: list[dict[str, Any]] = []
        if quick:
            cluster.start_workers(WORKER_HOSTS)
        else:
            from tests.cluster_scaling import series
            scaling = series(cluster, WORKER_HOSTS)
        before = cluster.jobs_per_host()
        figures = mixed_load(cluster, n=500 if quick else 2500, gap=2.0 if quick else 8.0)
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


def mixed_load(cluster: Cluster, n: int, gap: float) -> dict[str, Any]:
    """tests/chaos.py's load through the balancer while the faults happen; then its checks."""
    steps: list[Callable[[], None]] = [
        cluster.cut_worker_host, lambda: cluster.partition_api("Redis"),
        lambda: cluster.partition_api("PostgreSQL"), cluster.kill_api_host]
    duration = len(steps) * gap + (LEASE + 6) + 6 + 6 + 3 + gap
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
    submitted = chaos.load(cluster, cluster.receiver, n, duration)
    faults.join()
    if errors:
        raise RuntimeError(f"fault injection broke: {errors[0]!r}") from errors[0]
    outcome = chaos.settle(cluster, cluster.receiver, submitted, timeout=180)
    outcome.update(faults_injected=len(cluster.faults),
                   run_s=round(time.monotonic() - started, 1))
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
    if figures["scaling"]:
        from tests.cluster_scaling import report
        report(figures["scaling"])
    dup = sum(figures["duplicated"].values())
    bad = (figures["lost"] + figures["wrong"] + figures["webhooks_undelivered"] + dup
           + (not figures["cut_job_right"]))
    print(f"cluster: took {time.monotonic() - began:.0f} s")
    if bad:
        print("cluster: failed" + (f"; logs in {figures['workdir']}" if args.keep else
                                   " (--keep keeps the hosts' logs)"), file=sys.stderr)
    print(f"cluster: hosts={figures['hosts']} api_hosts={len(API_HOSTS)} "
          f"worker_hosts={len(WORKER_HOSTS)} "
          f"jobs={figures['jobs_accepted']} lost={figures['lost']} duplicated={dup} "
          f"partitions={figures['partitions']} "
          f"per_worker_host=[{','.join(str(n) for n in figures['per_worker_host'])}]")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
