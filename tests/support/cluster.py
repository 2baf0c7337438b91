"""The hosts of `make cluster` (tests/cluster.py) and what runs on them: Redis with Sentinel
on `redis1` and `redis2` and PostgreSQL with a synchronous standby on `pg1` and `pg2`
(tests/support/ha.py), HAProxy (and the third sentinel) on `lb`, `predq api` on two API hosts,
`predq worker` on three worker hosts (the deliverer and beat on the first), and this process
on `client`. The faults it can do to them, and what tests/chaos.py needs of a system under
test (`chaos.Target`)."""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import requests

from bench.procs import Proc, ProcSet, wait_http, wait_log
from migrations.runner import upgrade
from service.cli.demo import register_demo_models
from service.core import times
from service.core.settings import Settings
from service.models.registry import add_model
from service.ops import heartbeats
from service.store.db import make_engine
from service.tenants import keys
from tests import chaos
from tests.support import ha, netns
from tests.support.ha import until
from tests.support.sleepy import train_sleepy

ROOT = str(Path(__file__).resolve().parent.parent.parent)
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
    timeout check 1s
    retries 2
    option redispatch
frontend predq
    bind {address}:80
    default_backend api
backend api
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    # an API host that stops answering /readyz is out within about 2 s, and the requests it
    # holds are closed: their clients try again (with their Idempotency-Key) on another host
    default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


class Cluster:
    """The hosts, what runs on them, and the faults done to them. It offers what tests/chaos.py
    needs of a system under test (`chaos.Target`)."""

    def __init__(self, net: netns.Network, workdir: Path) -> None:
        self.net, self.workdir = net, workdir
        self.procs = ProcSet(log_dir=str(workdir))
        self.receiver: chaos.Receiver | None = None
        self.pg: ha.PostgresPair | None = None
        self.failovers: list[ha.Failover] = []
        self.engine: Any = None
        self.faults: list[chaos.Fault] = []
        self.partitions = 0
        self.slow_job: tuple[str, np.ndarray] | None = None  # the job cut mid-chunk
        self.mid_batch = False
        self.uploading = threading.Event()
        self.apis: dict[str, Proc] = {}

    def boot(self) -> None:
        """Make the hosts, start Redis and PostgreSQL, migrate, register the models and a key;
        from here on this process is the client host. `close()` undoes what got done."""
        net, workdir = self.net, self.workdir
        for name in (*ha.REDIS_HOSTS, *ha.PG_HOSTS, "lb", *API_HOSTS, *WORKER_HOSTS, "client"):
            net.add(name)
        net.enter("client")
        self.lb = net.hosts["lb"].address
        self.receiver = chaos.Receiver(net.hosts["client"].address)
        self.redis_group = ha.RedisGroup(net, self.procs, workdir)
        self.redis_group.start()
        self.pg = ha.PostgresPair(net)
        self.pg.start()
        self.settings = Settings.from_env(
            {}, database_url=self.pg.url, redis_url=self.redis_group.url,
            var_dir=str(workdir / "var"), model_dir=str(workdir / "models"), port=8000,
            bulk_chunk_rows=500, secret_key=chaos._secret(), lease_seconds=LEASE,
            worker_concurrency=1, webhook_timeout=5.0,
            webhook_allow_hosts=f"{self.receiver.host}:{self.receiver.port}",
            webhook_retry_schedule="0.5,1,2,4,8,15,30,60")
        self.redis = self.redis_group.client()
        until(lambda: self.redis.ping(), 10, "Redis through Sentinel")
        upgrade(self.settings.database_url)
        self.engine = make_engine(self.settings.database_url, pool_pre_ping=True)
        with self.engine.begin() as conn:
            register_demo_models(conn, self.settings.model_dir, workdir / "train")
            add_model(conn, self.settings.model_dir,
                      str(train_sleepy(workdir / "train" / "sleepy.joblib")), "sleepy", "1")
            self.key = keys.create_key(conn, "cluster")
        self.model = joblib.load(workdir / "train" / "iris.joblib")

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
        until(lambda: self.balancer() == {h: "UP" for h in API_HOSTS}, 30,
               "the balancer to see both API hosts up")

    def start_workers(self, hosts: tuple[str, ...]) -> None:
        started = {h: self.start(h, "worker") for h in hosts}
        if "w1" in hosts:
            started["w1-deliverer"] = self.start("w1", "deliverer")
            self.procs.start("w1-beat", self.net.argv("w1", [PY, "-m", "service.cli", "beat"]),
                             self.env("w1"), cwd=ROOT)
        for proc in started.values():
            wait_log(proc, "ready.", 90)
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
            if not worker.identity.node.startswith("deliverer@"):  # single jobs' and chunks'
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
        assert self.pg is not None
        primary = self.redis_group.master() if what == "Redis" else self.pg.primary
        address = self.net.hosts[primary].address

        def act() -> None:
            self.net.partition(host, address)
            time.sleep(6)
            self.net.heal(host, address)
        self.partitions += 1
        self._fault(f"partition {host} from {what} for 6 s", "broker or database", act)

    def kill_redis_primary(self) -> None:
        """The Redis master's host dies; Sentinel promotes the replica; a few seconds later a
        new host takes the dead one's place, as a replica."""
        failover = self.redis_group.lose_master()
        self._failed_over(failover)
        time.sleep(3)
        self.redis_group.replace_host(failover.host)

    def kill_postgres_primary(self) -> None:
        """The PostgreSQL primary's host dies; the standby is promoted as the runbook says
        (tests/support/ha.py), and the old host is rebuilt as its standby."""
        assert self.pg is not None
        self._failed_over(self.pg.lose_primary())
        time.sleep(3)
        self.pg.rebuild_standby()

    def _failed_over(self, failover: ha.Failover) -> None:
        self.failovers.append(failover)
        name = f"kill the {failover.store} primary's host ({failover.host}), fail over"
        self.faults.append(chaos.Fault(name, "broker or database", failover.died,
                                       failover.replaced, failover.died))
        took = (failover.replaced - failover.died).total_seconds()
        print(f"  fault: {name}: a new primary after {took:.1f} s", flush=True)

    def kill_api_host(self, host: str = "api2") -> None:
        def act() -> None:
            os.killpg(self.apis[host].pid, signal.SIGKILL)
            self.net.cut(host)
            until(lambda: self.balancer().get(host) == "DOWN", 15,
                   f"the balancer to mark {host} down")
        self._fault(f"kill API host {host} (processes and link)", "api", act)

    def check_slow_job(self) -> dict[str, Any]:
        """The job whose chunk was cut off: every row once, in order, and the cut host's late
        writes refused (its log says what it discarded)."""
        assert self.slow_job is not None
        job_id, rows = self.slow_job
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.key}"
        until(lambda: http.get(self.url(f"/v1/jobs/{job_id}"), timeout=30).json()["status"]
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
        """Stop the receiver and PostgreSQL; `Network.close()` ends the rest on the hosts."""
        if self.receiver is not None:
            self.receiver.close()
        if self.engine is not None:
            self.engine.dispose()
        if self.pg is not None:
            self.pg.close()

