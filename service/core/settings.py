"""Settings from environment variables (12-factor): one typed object, laptop defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from service.core.redisurl import sentinels

_VAR = Path(os.environ.get("PREDQ_VAR_DIR", "var")).resolve()


@dataclass(frozen=True)
class Settings:
    """Every knob of predq. The env var for field `x` is `PREDQ_X` unless `env` names another."""

    #: SQLAlchemy URL of the result store; SQLite (WAL) on a laptop, PostgreSQL in production.
    #: A primary and its standbys: every host, and `target_session_attrs=read-write` so that
    #: each connection finds the one that takes writes (a promoted standby too), e.g.
    #: `postgresql+psycopg://u:p@/predq?host=pg1:5432&host=pg2:5432&target_session_attrs=read-write`.
    database_url: str = field(
        default=f"sqlite:///{_VAR / 'predq.db'}", metadata={"env": "DATABASE_URL"}
    )
    #: Where Redis is, for the broker and every other use: one server (redis://host:port/db,
    #: unix:///path) or a Sentinel group, which every process then follows through a failover
    #: (`redis+sentinel://[:password@]host:26379,host2:26379,host3:26379/SERVICE[/db]`, see
    #: service/core/redisurl.py).
    redis_url: str = field(
        default=f"unix://{_VAR / 'redis.sock'}", metadata={"env": "REDIS_URL"}
    )
    #: Working directory for `predq up`: embedded Redis socket, SQLite file, dev key.
    var_dir: str = str(_VAR)
    #: Where registered model artifacts are copied (content-addressed by sha256, read-only).
    model_dir: str = str(_VAR / "models")
    #: Where the API, worker and deliverer processes of this machine share their Prometheus
    #: samples (prometheus_client multiprocess mode); `predq up` empties it at start. Empty:
    #: each process keeps its own, and `/metrics` shows only the answering API process's.
    metrics_dir: str = str(_VAR / "metrics")
    #: Largest accepted request body in bytes (413 beyond it).
    max_body_bytes: int = 10 * 1024 * 1024
    #: Largest number of rows one JSON job may carry (400 beyond it).
    max_rows_per_job: int = 10_000
    #: Seconds a request body may pause between two reads, and may take in all, before the
    #: API answers 408 and closes the connection (a slow-loris client holds one connection of
    #: `api_connections` at most this long; gunicorn's keep-alive of 2 s bounds the headers).
    api_read_timeout: float = 10.0
    api_body_timeout: float = 120.0
    #: Deepest nesting of arrays and objects a JSON body may have (jobs need 3).
    max_json_depth: int = 32
    #: Longest string a JSON body may carry in a field or as a feature name (webhook_url: 2000),
    #: and a typed model's string value (a cell of a CSV, a JSON string, an Arrow string).
    max_string_length: int = 1000
    #: Most distinct strings one column of a typed model may hold in one job's rows or one
    #: bulk chunk (a hostile body of unique strings cannot grow memory past that).
    max_distinct_strings: int = 10_000
    #: Bulk uploads (CSV, NDJSON, .npy bodies): the largest body in bytes (413 beyond), the
    #: most rows, the rows per chunk (a chunk is one message and one commit), and how many
    #: chunk messages of one job are out at once at least (a job keeps two per pool process of
    #: the live workers reading its queue, if that is more; an interactive job waits behind at
    #: most two chunks per worker process).
    max_upload_bytes: int = 2 * 1024**3
    max_bulk_rows: int = 10_000_000
    bulk_chunk_rows: int = 10_000
    bulk_window: int = 4
    #: Seconds one bulk chunk's predict should take: a chunk holds as many rows as the model's
    #: measured cost per row allows (at most `bulk_chunk_rows`, uploads; `bulk_ref_chunk_rows`,
    #: by reference), so a slot of the bulk processes frees every fraction of a second.
    bulk_chunk_seconds: float = 0.25
    #: A directory bulk jobs may name their input and output files in instead of uploading
    #: them (`{"input": "in/rows.npy", "output": "out/rows.parquet"}`): the API reads only a
    #: file's header, each worker reads its own chunks. Every API and worker host must see it
    #: at this same path (a shared volume). Empty: jobs by reference are refused. A tenant's
    #: paths are relative to its own directory, `<data root>/<tenant>/` (docs/operators.md
    #: says how a tenant's name becomes a directory name).
    data_root: str = ""
    #: Prefixes of the data root a tenant may also read from, comma-separated `TENANT=PREFIX`
    #: (`*` for every tenant), e.g. `acme=reference/iris,*=public`: the tenant names such a
    #: file `@PREFIX/...` (`"input": "@public/rows.npy"`). Read only: outputs go to the
    #: tenant's own directory. Empty: a tenant reads its own directory only.
    data_shared: str = ""
    #: Rows per chunk of a job by reference (at most 32 MiB of float64 rows, at least
    #: `bulk_chunk_rows`): the API stores no rows, so fewer, larger chunks cost only the
    #: granularity of progress and of priority (an interactive job may wait one such chunk).
    bulk_ref_chunk_rows: int = 100_000
    #: Seconds after which the reconciler deletes the stored chunks of an upload that never
    #: became a job (the API was killed mid-upload, or the client went away).
    abandoned_upload_after: float = 3600.0
    #: Days finished jobs (inputs, results, webhook history) are kept before the reconciler
    #: deletes them; a tenant's own (`predq limits set --retention`) or a job's `retention`
    #: (seconds) overrides it.
    retention_days: float = 30.0
    #: A TOML file of periodic bulk forecasts (see service/bulk/schedules.py); `predq beat` checks
    #: it every `schedule_interval` seconds and re-reads it each time. Empty: none.
    schedules: str = ""
    schedule_interval: float = 60.0
    #: Most jobs the API commits in one transaction and publishes in one message.
    submit_group_max: int = 256
    #: Seconds the API's committer waits for more jobs when the last group had company (never
    #: for a lone request): larger groups cost less per job, each job waits longer. 0 (the
    #: default): a group is what arrived while the last one committed. Measured under gevent,
    #: against 0.003: +10 % jobs/s at saturation, -2.5 ms submit p50 at 500 jobs/s, +20 % CPU
    #: per job at that rate (smaller groups).
    submit_linger: float = 0.0
    #: Celery messages a worker buffers before it runs a micro-batch.
    batch_flush_every: int = 64
    #: Seconds a worker waits for more messages before it runs a partial micro-batch.
    batch_flush_interval: float = 0.005
    #: `predq api`: gunicorn worker processes, their worker class and the connections each
    #: holds at once. gevent: a synchronous predict waits for its result as a greenlet, so one
    #: process holds hundreds of waiting requests while it goes on answering others (a gthread
    #: process stops answering once each of its threads waits); it also costs less CPU per
    #: request (measured: 0.95 ms per job against 1.33 with gthread). One process groups more
    #: jobs per commit and publish; on a dedicated API host use one per core.
    api_workers: int = 1
    api_worker_class: str = "gevent"
    api_connections: int = 1000
    #: Processes per `predq worker` for single jobs (0: one per core), and for bulk chunks,
    #: which run at a lower CPU priority (`nice` + bulk_nice): a bulk job takes the cores
    #: single jobs leave, and yields them within a scheduler tick when single jobs come.
    worker_concurrency: int = 0
    bulk_concurrency: int = 0
    bulk_nice: int = 10
    #: BLAS and OpenMP threads a worker's pool process may give a model's predict (0: the
    #: libraries' default, one per core). A worker already runs a pool process per core, so
    #: more threads per process only oversubscribe the cores: with the default, a typed
    #: pipeline's 1M-row job took 2.0-2.8 s of worker CPU, with one thread 1.3-1.6 s.
    model_threads: int = 1
    #: Seconds after which Redis redelivers a message that was taken but never acknowledged.
    visibility_timeout: int = 3600
    #: Hard limit in seconds for one micro-batch; below visibility_timeout.
    task_time_limit: int = 60
    #: Seconds a claimed job belongs to its worker unless renewed: the worker's process renews
    #: the leases it holds every third of this while it runs. A job whose lease ran out lost its
    #: worker (dead or frozen): the reconciler sends it again and it runs alone, and the late
    #: write of the old claim is refused (fenced by its attempt).
    lease_seconds: int = 10
    #: Seconds after its last message before the reconciler sends a queued job again (the
    #: message was lost: Redis restarted, or the publish failed) - or, when its queue is empty
    #: in Redis, `republish_idle_after` seconds: an empty queue holds no message that is just
    #: slow (it was lost, or sits in the prefetch of a worker that died or froze).
    republish_after: float = 60.0
    republish_idle_after: float = 5.0
    #: Claims after which a job whose worker keeps dying fails instead of running again.
    max_attempts: int = 3
    #: Seconds between reconciler runs (started by `predq beat`).
    reconcile_interval: float = 2.0
    #: Model artifacts kept loaded per worker process.
    model_cache_size: int = 8
    #: Address `predq up` and the docker image bind the API to.
    host: str = "127.0.0.1"
    port: int = 8000
    #: Seconds an API process trusts its cached API keys before it re-reads the Redis
    #: revocation epoch: a revoked key stops working within this delay, which a revoke waits
    #: out before it returns (0: check every request).
    key_epoch_check_interval: float = 0.1
    #: Seconds a synchronous predict waits for its result when the request names no `timeout`,
    #: and the most it may ask for. Past it the caller gets 202 and the job id to poll.
    sync_timeout_default: float = 5.0
    sync_timeout_max: float = 30.0
    #: Most queued jobs per queue; beyond it submissions get 429 with Retry-After.
    max_depth_interactive: int = 2_000
    max_depth_normal: int = 20_000
    max_depth_bulk: int = 100_000
    #: Default per-tenant limits (0: unlimited); `predq limits set TENANT` gives a tenant its
    #: own. Requests per second count every authenticated /v1 call; rows per minute count the
    #: rows of accepted jobs that need a worker. Over either: 429 with Retry-After.
    rate_limit_rps: float = 0.0
    rate_limit_rows_per_minute: int = 0
    #: Fraction of each queue's limit one tenant may fill on its own.
    tenant_queue_share: float = 0.5
    #: Seconds an API process reuses its reading of the queue depths from SQL.
    depth_refresh_interval: float = 0.5
    #: Seconds a job waits in a queue before the reconciler moves it up one priority level
    #: (bulk -> normal -> interactive): low-priority work is delayed, never starved.
    promote_after: float = 30.0
    #: Fernet key (`python -c "from cryptography.fernet import Fernet;
    #: print(Fernet.generate_key().decode())"`) that seals webhook signing secrets in the
    #: database; `predq up` makes one under var/. Webhooks are refused without it.
    secret_key: str = field(default="", repr=False)
    #: Hosts, addresses or networks (optionally :port), comma-separated, that webhooks may reach
    #: although they are not public (e.g. `hooks.internal,10.1.0.0/16`). Default: none. The API
    #: and the deliverer parse it as they start: a bad entry stops them, it never fails a send.
    webhook_allow_hosts: str = ""
    #: Seconds one webhook attempt may take (connect, send, answer).
    webhook_timeout: float = 15.0
    #: Seconds between attempts, comma-separated: after the last, the event is dead-lettered.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,86400"
    #: Results up to this many bytes ride in the webhook body; larger ones as a result_url.
    webhook_max_inline_bytes: int = 256 * 1024
    #: Seconds a rotated-out endpoint secret goes on signing beside the new one.
    webhook_rotation_grace: float = 86_400.0
    #: Threads of `predq deliverer`, the webhook worker.
    webhook_concurrency: int = 16
    #: Attempts of one tenant a deliverer process makes at once: its further due events wait
    #: behind its own (in the order they came), never in front of another tenant's. More than
    #: `webhook_concurrency` means all of them.
    webhook_tenant_concurrency: int = 4
    #: Webhook endpoints one tenant may register (409 `too_many_endpoints` beyond it).
    webhook_max_endpoints: int = 20
    #: PostgreSQL connections each API process (and the deliverer) keeps open, and how many
    #: more it may open under load; a worker pool process keeps 2 (and 2 more). The budget of
    #: a host is these times its processes: see docs/production.md.
    db_pool_size: int = 10
    db_max_overflow: int = 20
    #: A token `GET /metrics` requires as `Authorization: Bearer TOKEN` (the metrics name every
    #: tenant). Empty: /metrics is open to whoever reaches the API's address.
    metrics_token: str = field(default="", repr=False)
    #: `json` (one object per line, for log pipelines) or `text` (what `predq up` shows).
    log_format: str = "json"
    #: Log level for API and workers.
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        sentinels(self.redis_url)  # a malformed Sentinel URL stops every process at start
        _check_database_hosts(self.database_url)
        if self.task_time_limit >= self.visibility_timeout:
            raise ValueError(
                "task_time_limit must be below visibility_timeout, or Redis would redeliver "
                "a message while its first copy may still run"
            )
        if self.lease_seconds < 3:
            # Renewed every third of it: a shorter lease would be renewed more than once a
            # second per worker process, and lost to any pause of a second.
            raise ValueError("lease_seconds must be at least 3")
        if self.max_attempts < 1 or self.republish_after <= 0:
            raise ValueError("max_attempts must be at least 1 and republish_after positive")
        if not 0 < self.sync_timeout_default <= self.sync_timeout_max:
            raise ValueError("sync_timeout_default must be positive and at most sync_timeout_max")
        try:
            if any(delay < 0 for delay in self.retry_schedule()):
                raise ValueError
        except ValueError:
            raise ValueError("webhook_retry_schedule: comma-separated seconds, e.g. 5,300,1800"
                             ) from None
        if not 0 < self.tenant_queue_share <= 1:
            raise ValueError("tenant_queue_share must be in (0, 1]")
        if self.batch_flush_every < 1 or self.submit_group_max < 1:
            raise ValueError("batch_flush_every and submit_group_max must be at least 1")
        if self.model_threads < 0:
            raise ValueError("model_threads must be 0 (the libraries' default) or more")
        if self.webhook_tenant_concurrency < 1:
            raise ValueError("webhook_tenant_concurrency must be at least 1")
        if self.webhook_max_endpoints < 1:
            raise ValueError("webhook_max_endpoints must be at least 1")
        self._check_data_root()

    def _check_data_root(self) -> None:
        """The model store may not lie inside the data root (a tenant's output could shadow
        an artifact), and every shared prefix must be a plain relative path."""
        self.shared_prefixes()
        if not self.data_root or not self.model_dir:
            return
        root, store = Path(self.data_root).resolve(), Path(self.model_dir).resolve()
        if store == root or root in store.parents:
            raise ValueError(f"model_dir ({self.model_dir}) is inside data_root "
                             f"({self.data_root}): tenants could write there; move one")

    def shared_prefixes(self) -> list[tuple[str, str]]:
        """`data_shared` as (tenant or `*`, prefix relative to the data root) pairs."""
        out = []
        for entry in (e.strip() for e in self.data_shared.split(",")):
            if not entry:
                continue
            tenant, sep, prefix = entry.partition("=")
            parts = prefix.strip().strip("/").split("/")
            if not sep or not tenant.strip() or prefix.strip().startswith("/") or any(
                    p in ("", ".", "..") or "\x00" in p for p in parts):
                raise ValueError(f"data_shared: {entry!r} is not TENANT=PREFIX with PREFIX a "
                                 "relative path under the data root (no '..')")
            out.append((tenant.strip(), "/".join(parts)))
        return out

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from `environ` (default os.environ), then apply `overrides`."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env", f"PREDQ_{f.name.upper()}")
            if name in env:
                values[f.name] = _coerce(f.type, env[name])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def broker_url(self) -> str:
        """The redis URL in kombu's spelling (kombu names unix sockets `redis+socket://`, and
        takes one `sentinel://` URL per sentinel; the group's name goes in the transport
        options: service/core/broker.py)."""
        group = sentinels(self.redis_url)
        if group is not None:
            return group.kombu_url()
        if self.redis_url.startswith("unix://"):
            return "redis+socket://" + self.redis_url[len("unix://") :]
        return self.redis_url

    def retry_schedule(self) -> list[float]:
        return [float(x) for x in self.webhook_retry_schedule.split(",") if x.strip()]

    def pool_options(self) -> dict[str, int]:
        """Connection pool size for the API's and the deliverer's engine (SQLite: none)."""
        if self.database_url.startswith("sqlite"):
            return {}
        return {"pool_size": self.db_pool_size, "max_overflow": self.db_max_overflow}

    def queue_limits(self) -> dict[str, int]:
        return {"predict.interactive": self.max_depth_interactive,
                "predict.normal": self.max_depth_normal, "predict.bulk": self.max_depth_bulk}

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes."""
        out = {}
        for f in fields(self):
            name = f.metadata.get("env", f"PREDQ_{f.name.upper()}")
            out[name] = str(getattr(self, f.name))
        return out


def _check_database_hosts(url: str) -> None:
    """Several PostgreSQL hosts without `target_session_attrs=read-write` (or `primary`) would
    let a process write to whichever answers first: a standby refuses every write."""
    query = parse_qs(urlsplit(url).query)
    attrs = query.get("target_session_attrs", ["any"])[0]
    hosts = [h for value in query.get("host", []) for h in value.split(",")]
    if len(hosts) > 1 and attrs not in ("read-write", "primary"):
        raise ValueError("DATABASE_URL names several hosts: add target_session_attrs=read-write "
                         "so that every connection finds the primary")


def _coerce(type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return raw
