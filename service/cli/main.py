"""The `predq` command: run it all, migrate, register models, manage keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from service.cli.processes import (
    DEFAULT_QUEUES,
    api_command,
    beat_command,
    deliverer_command,
    worker_command,
)
from service.cli.support import run as _run
from service.cli.support import settings as _settings
from service.ops import heartbeats, metricsdir
from service.store.db import make_engine


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
    from service.store.migrate import upgrade

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
    from service.models import registry

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
    from service.models import registry

    with make_engine(_settings().database_url).connect() as conn:
        for info in registry.list_models(conn):
            click.echo(f"{info.name}\t{info.version}\t{info.kind}\t{info.n_features}\t"
                       f"{info.sha256[:12]}")


@models.command("demo")
def models_demo() -> None:
    """Register the demo models iris and diabetes (trained on the spot, no download)."""
    from service.cli.demo import register_demo_models

    settings = _settings()
    with make_engine(settings.database_url).begin() as conn:
        added = register_demo_models(conn, settings.model_dir, Path(settings.var_dir) / "demo")
    click.echo("registered: " + (", ".join(added) or "nothing new"))


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


    client = redis_lib.Redis.from_url(_settings().redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
    prefix = f"{socket.gethostname()}:".encode()
    try:
        seen: list[bytes] = client.zrangebyscore(  # type: ignore[assignment]
            heartbeats.WORKERS, time.time() - heartbeats.WORKER_TTL, "+inf")
    except redis_lib.RedisError as exc:
        raise click.ClickException(f"Redis unavailable: {exc}") from exc
    if not any(name.startswith(prefix) for name in seen):
        raise click.ClickException("no worker heartbeat from this host in the last "
                                   f"{heartbeats.WORKER_TTL:.0f} s")
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
    """Run the scheduler of periodic tasks (the reconciler, the schedules). Run exactly one."""
    os.execvp(sys.executable, [sys.executable, *beat_command(_settings())])


@main.command()
@click.option("--queues", default=DEFAULT_QUEUES, show_default=True,
              help="queues to consume, highest priority first")
def worker(queues: str) -> None:
    """Run a Celery worker that micro-batches predictions."""
    settings = _settings()
    metricsdir.export(settings.metrics_dir)
    os.execvp(sys.executable, [sys.executable, *worker_command(settings, queues)])


@main.command()
def up() -> None:
    """Run API, worker and (if REDIS_URL is unset) a private Redis: everything for a laptop."""
    from service.cli.up import run_all

    sys.exit(run_all(_settings(), "REDIS_URL" not in os.environ))


def _register() -> None:
    from service.cli.jobs import cancel, result, status, submit
    from service.cli.tenants import keys, limits, schedules

    for command in (keys, limits, schedules, submit, status, result, cancel):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
