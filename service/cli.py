"""The `predq` command: run it all, migrate, register models, manage keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from service import metricsdir
from service.config import Settings
from service.db import make_engine
from service.errors import PredqError
from service.priorities import PREDICT_QUEUES

# maintenance first: reconciler runs are rare and short, and must not wait behind a backlog.
DEFAULT_QUEUES = ",".join(("maintenance", *PREDICT_QUEUES))


def _settings() -> Settings:
    return Settings.from_env()


@click.group()
def main() -> None:
    """predq: asynchronous predictions from scikit-learn models."""


@main.group()
def db() -> None:
    """The result store schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations up to REVISION."""
    from service.migrate import upgrade

    upgrade(_settings().database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def models() -> None:
    """Registered models."""


@models.command("add")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True)
@click.option("--version", "version", required=True)
@click.option("--feature-names", help="comma-separated names, in the model's column order")
@click.option("--cache-ttl", type=int,
              help="serve repeated single-row inputs from Redis for this many seconds")
@click.option("--trust", "trust", multiple=True, metavar="TYPE",
              help="a .skops artifact may hold this type (repeatable)")
def models_add(path: str, name: str, version: str, feature_names: str | None,
               cache_ttl: int | None, trust: tuple[str, ...]) -> None:
    """Register the joblib or .skops artifact at PATH as NAME VERSION (records its sha256 and
    the scikit-learn and numpy versions that workers must run)."""
    from service import registry

    settings = _settings()
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    with make_engine(settings.database_url).begin() as conn:
        info = _run(lambda: registry.add_model(conn, settings.model_dir, path, name, version,
                                               names, cache_ttl, list(trust)))
    click.echo(f"registered {info.name} {info.version} ({info.kind}, {info.n_features} "
               f"features) sha256 {info.sha256}")


@models.command("list")
def models_list() -> None:
    """List every registered model version."""
    from service import registry

    with make_engine(_settings().database_url).connect() as conn:
        for info in registry.list_models(conn):
            click.echo(f"{info.name}\t{info.version}\t{info.kind}\t{info.n_features}\t"
                       f"{info.sha256[:12]}")


@models.command("demo")
def models_demo() -> None:
    """Register the demo models iris and diabetes (trained on the spot, no download)."""
    from service.demo import register_demo_models

    settings = _settings()
    with make_engine(settings.database_url).begin() as conn:
        added = register_demo_models(conn, settings.model_dir, Path(settings.var_dir) / "demo")
    click.echo("registered: " + (", ".join(added) or "nothing new"))


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--tenant", required=True)
@click.option("--scopes", default="submit,read", show_default=True,
              help="comma-separated: submit, read, admin")
@click.option("--expires-in", help="lifetime, e.g. 90d, 12h, 30m or seconds")
@click.option("--name", help="what the key is for (shown by `keys list`)")
def keys_create(tenant: str, scopes: str, expires_in: str | None, name: str | None) -> None:
    """Create a key for TENANT and print it once (only its hash is stored)."""
    from datetime import timedelta

    from service.jobs import utcnow
    from service.keys import create_key, parse_scopes

    expires_at = utcnow() + timedelta(seconds=_duration(expires_in)) if expires_in else None
    with make_engine(_settings().database_url).begin() as conn:
        click.echo(_run(lambda: create_key(conn, tenant, parse_scopes(scopes), expires_at,
                                           name)))


@keys.command("list")
@click.option("--tenant", help="only this tenant's keys")
@click.option("--all", "show_all", is_flag=True, help="also revoked and expired keys")
def keys_list(tenant: str | None, show_all: bool) -> None:
    """List keys (prefix, tenant, scopes, status, expiry, name); never the keys themselves."""
    from service.keys import list_keys

    with make_engine(_settings().database_url).connect() as conn:
        rows = list_keys(conn, tenant)
    click.echo("prefix\ttenant\tscopes\tstatus\tcreated\texpires\tname")
    for k in rows:
        if show_all or k["status"] == "active":
            click.echo("\t".join([k["prefix"], k["tenant"], ",".join(k["scopes"]), k["status"],
                                  k["created_at"][:19], (k["expires_at"] or "-")[:19],
                                  k["name"] or "-"]))


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r}: e.g. 90d, 12h, 30m or seconds") from None
    if value <= 0:
        raise click.BadParameter("must be positive")
    return value


@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke the key that starts with PREFIX (its first 10 characters)."""
    import redis

    from service.keys import announce_revocation, revoke_key

    settings = _settings()
    with make_engine(settings.database_url).begin() as conn:
        count = revoke_key(conn, prefix[:10])
    try:
        announce_revocation(redis.Redis.from_url(settings.redis_url, socket_timeout=5))
    except redis.RedisError as exc:
        click.echo(f"warning: Redis unreachable ({exc}); API processes may accept the key "
                   "for up to 60 s more", err=True)
    click.echo(f"revoked {count} key(s)")
    if not count:
        sys.exit(1)


def _client(url: str | None, key: str | None):  # type: ignore[no-untyped-def]
    from service.client import Client

    return Client(url, key)


_url = click.option("--url", envvar="PREDQ_URL", help="the API [PREDQ_URL, default "
                    "http://127.0.0.1:8000]")
_key = click.option("--key", envvar="PREDQ_API_KEY",
                    help="API key [PREDQ_API_KEY; default: var/dev-api-key of `predq up`]")


@main.command()
@click.option("--model", required=True)
@click.option("--input", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help=".csv (header: feature names), .ndjson, .npy or .parquet")
@click.option("--version", "version", help="default: the latest")
@click.option("--priority", help="interactive, normal, bulk (default for files) or 0-9")
@click.option("--idempotency-key", help="retrying with the same key never makes a second job")
@click.option("--wait", is_flag=True, help="wait for the job, showing its progress")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="with --wait: write the result here (.csv, .ndjson, .json, .npy, .parquet)")
@_url
@_key
def submit(model: str, path: str, version: str | None, priority: str | None,
           idempotency_key: str | None, wait: bool, output: str | None, url: str | None,
           key: str | None) -> None:
    """Upload FILE as a bulk job and print its id (with --wait: its final status too)."""
    client = _client(url, key)
    size = os.path.getsize(path)
    with click.progressbar(length=size, label="upload", file=sys.stderr) as bar:
        job_id = _call(lambda: client.submit(model, path=path, version=version,
                                             priority=priority, idempotency_key=idempotency_key,
                                             progress=_advance(bar)))
    click.echo(job_id)
    if not wait:
        return
    job = _watch(client, job_id)
    click.echo(f"{job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
               err=True)
    if job["status"] != "succeeded":
        sys.exit(1)
    if output:
        click.echo(f"result: {_call(lambda: client.result(job_id, output))}", err=True)


@main.command()
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="wait until it is final, showing its progress")
@_url
@_key
def status(job_id: str, wait: bool, url: str | None, key: str | None) -> None:
    """Print the job as JSON."""
    import json

    client = _client(url, key)
    job = _watch(client, job_id) if wait else _call(lambda: client.status(job_id))
    click.echo(json.dumps(job, indent=2))


@main.command()
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="write here, in the format its suffix names (default: JSON to stdout)")
@_url
@_key
def result(job_id: str, output: str | None, url: str | None, key: str | None) -> None:
    """Fetch a succeeded job's result."""
    import json

    client = _client(url, key)
    got = _call(lambda: client.result(job_id, output))
    click.echo(got if output else json.dumps(got))


@main.command()
@click.argument("job_id")
@_url
@_key
def cancel(job_id: str, url: str | None, key: str | None) -> None:
    """Cancel a queued or running job."""
    client = _client(url, key)
    click.echo(_call(lambda: client.cancel(job_id))["status"])


def _advance(bar):  # type: ignore[no-untyped-def]
    def progress(done: int, total: int) -> None:
        bar.length = max(total, 1)
        bar.update(done - bar.pos)
    return progress


def _watch(client, job_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    with click.progressbar(length=1, label="rows", file=sys.stderr) as bar:
        return _call(lambda: client.wait(job_id, progress=_advance(bar)))  # type: ignore[no-any-return]


def _call(fn):  # type: ignore[no-untyped-def]
    from service.client import ApiError

    try:
        return fn()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def schedules() -> None:
    """Periodic bulk forecasts (PREDQ_SCHEDULES, run by `predq beat`)."""


@schedules.command("check")
@click.argument("path", required=False)
def schedules_check(path: str | None) -> None:
    """Check the schedules file (default: PREDQ_SCHEDULES) and show each one's next runs."""
    from datetime import datetime

    from croniter import croniter

    from service import jobs
    from service import schedules as sched

    path = path or _settings().schedules
    if not path:
        raise click.ClickException("no schedules file: set PREDQ_SCHEDULES or name one")
    declared = _run(lambda: sched.load(path))
    now = jobs.utcnow()
    for s in declared:
        upcoming = croniter(s.cron, now).get_next(datetime)
        click.echo(f"{s.name}\t{s.cron}\t{s.tenant}\t{s.model}\t{s.input}\t"
                   f"{s.output or '-'}\tnext {upcoming.isoformat()}")
    click.echo(f"{len(declared)} schedule(s) OK", err=True)


@main.group()
def limits() -> None:
    """Per-tenant rate limits (requests per second, rows per minute)."""


@limits.command("set")
@click.argument("tenant")
@click.option("--rps", type=float, help="requests per second (0: unlimited)")
@click.option("--rows-per-minute", type=int, help="rows of accepted jobs per minute (0: unlimited)")
@click.option("--retention", help="how long finished jobs are kept, e.g. 7d, 12h")
def limits_set(tenant: str, rps: float | None, rows_per_minute: int | None,
               retention: str | None) -> None:
    """Give TENANT its own limits (the ones named; the others stay); every API process applies
    them within 2 seconds."""
    from service.ratelimit import all_limits, set_limits

    seconds = _duration(retention) if retention else None
    with make_engine(_settings().database_url).begin() as conn:
        _run(lambda: set_limits(conn, tenant, rps, rows_per_minute, seconds))
        click.echo(f"{tenant}: {_describe(*all_limits(conn)[tenant])}")


@limits.command("clear")
@click.argument("tenant")
def limits_clear(tenant: str) -> None:
    """Put TENANT back on the default limits (PREDQ_RATE_LIMIT_*)."""
    from service.ratelimit import clear_limits

    with make_engine(_settings().database_url).begin() as conn:
        count = clear_limits(conn, tenant)
    click.echo(f"{tenant}: default limits" if count else f"{tenant} had no limits of its own")


@limits.command("show")
def limits_show() -> None:
    """The default limits and every tenant's own."""
    from service.ratelimit import all_limits

    settings = _settings()
    default = _describe(settings.rate_limit_rps, settings.rate_limit_rows_per_minute,
                        settings.retention_days * 86400)
    click.echo(f"default: {default}")
    with make_engine(settings.database_url).connect() as conn:
        for tenant, values in all_limits(conn).items():
            click.echo(f"{tenant}: {_describe(*values)}")


def _describe(rps: float | None, rows: int | None, retention: float | None = None) -> str:
    def one(value: float | None, unit: str) -> str:
        if value is None:
            return f"default {unit}"
        return f"unlimited {unit}" if value == 0 else f"{value:g} {unit}"

    kept = "default retention" if retention is None else f"jobs kept {retention / 86400:g} days"
    return f"{one(rps, 'requests/s')}, {one(rows, 'rows/minute')}, {kept}"


@main.command()
@click.option("--workers", type=int, help="gunicorn worker processes [PREDQ_API_WORKERS]")
@click.option("--connections", type=int,
              help="connections each gunicorn worker holds at once [PREDQ_API_CONNECTIONS]")
def api(workers: int | None, connections: int | None) -> None:
    """Run the HTTP API under gunicorn."""
    settings = _settings()
    settings = settings.replace(api_workers=workers or settings.api_workers,
                                api_connections=connections or settings.api_connections)
    metricsdir.export(settings.metrics_dir)
    os.execvp(sys.executable, [sys.executable, *api_command(settings)])


@main.group()
def health() -> None:
    """Health checks for process supervisors (docker compose, systemd)."""


@health.command("worker")
def health_worker() -> None:
    """Exit 0 if a worker on this host sent its heartbeat to Redis lately, else 1."""
    import socket
    import time

    import redis as redis_lib

    from service import realtime

    client = redis_lib.Redis.from_url(_settings().redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
    prefix = f"{socket.gethostname()}:".encode()
    try:
        seen: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
            realtime.WORKERS, time.time() - realtime.WORKER_TTL, "+inf")
    except redis_lib.RedisError as exc:
        raise click.ClickException(f"Redis unavailable: {exc}") from exc
    if not any(name.startswith(prefix) for name in seen):
        raise click.ClickException("no worker heartbeat from this host in the last "
                                   f"{realtime.WORKER_TTL:.0f} s")
    click.echo("worker alive")


@main.command("dead-letters")
@click.option("--last", default=20, show_default=True, help="how many of the newest to print")
@click.option("--purge", is_flag=True, help="delete them all instead")
def dead_letters(last: int, purge: bool) -> None:
    """Messages the workers refused (disallowed content, undecodable, not our tasks' shape):
    the count on stderr, then the newest first, one JSON object a line."""
    import json

    import redis as redis_lib

    from workers import deadletter

    client = redis_lib.Redis.from_url(_settings().redis_url, socket_timeout=5,
                                      socket_connect_timeout=5)
    try:
        if purge:
            click.echo(f"purged {deadletter.purge(client)} dead letters")
            return
        count, entries = deadletter.latest(client, last)
    except redis_lib.RedisError as exc:
        raise click.ClickException(f"Redis unavailable: {exc}") from exc
    click.echo(f"{count} dead letters; the newest {len(entries)} follow", err=True)
    for entry in entries:
        click.echo(json.dumps(entry))


@main.command()
def deliverer() -> None:
    """Run the webhook deliverer: a Celery worker on the webhooks queue, with threads."""
    settings = _settings()
    metricsdir.export(settings.metrics_dir)
    os.execvp(sys.executable, [sys.executable, *deliverer_command(settings)])


@main.command()
def beat() -> None:
    """Run the scheduler of periodic tasks (the reconciler). Run exactly one."""
    os.execvp(sys.executable, [sys.executable, *beat_command(_settings())])


@main.command()
@click.option("--queues", default=DEFAULT_QUEUES, show_default=True,
              help="queues to consume, highest priority first")
def worker(queues: str) -> None:
    """Run a Celery worker that micro-batches predictions."""
    settings = _settings()
    metricsdir.export(settings.metrics_dir)
    os.execvp(sys.executable, [sys.executable, *worker_command(settings, queues)])


def api_command(settings: Settings) -> list[str]:
    # gevent (the default; see Settings.api_worker_class): waiting requests cost a greenlet.
    return ["-m", "gunicorn", "service.wsgi:app", "--bind", f"{settings.host}:{settings.port}",
            "--config", "python:service.gunicorn_conf",  # metrics bookkeeping, log format
            "--worker-class", settings.api_worker_class, "--workers", str(settings.api_workers),
            "--worker-connections", str(settings.api_connections), "--timeout", "30",
            "--graceful-timeout", "20", "--log-level", "warning"]


def deliverer_command(settings: Settings) -> list[str]:
    # Threads: an attempt mostly waits on the receiver; never on a prediction worker's pool.
    return ["-m", "celery", "-A", "workers.main", *_quiet(settings), "worker", "-Q", "webhooks",
            "--pool",
            "threads", "--concurrency", str(settings.webhook_concurrency), "--hostname",
            "deliverer@%h", "--loglevel", settings.log_level, "--without-gossip",
            "--without-mingle", "--without-heartbeat"]


def beat_command(settings: Settings) -> list[str]:
    schedule = os.path.join(settings.var_dir, "celerybeat-schedule")
    return ["-m", "celery", "-A", "workers.main", "beat", "--schedule", schedule,
            "--loglevel", settings.log_level]


def worker_command(settings: Settings, queues: str = DEFAULT_QUEUES) -> list[str]:
    concurrency = settings.worker_concurrency or os.cpu_count() or 1
    return ["-m", "celery", "-A", "workers.main", *_quiet(settings), "worker", "-Q", queues,
            "--concurrency", str(concurrency), "--loglevel", settings.log_level,
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def _quiet(settings: Settings) -> list[str]:
    """No start-up banner where every line must be JSON."""
    return ["--quiet"] if settings.log_format == "json" else []


@main.command()
def up() -> None:
    """Run API, worker and (if REDIS_URL is unset) a private Redis: everything for a laptop."""
    from service.devserver import run_all

    sys.exit(run_all(_settings(), "REDIS_URL" not in os.environ))


def _run(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except PredqError as exc:
        raise click.ClickException(exc.message) from exc





if __name__ == "__main__":
    main()
