"""The `predq` command: run it all, migrate, register models, manage keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from service.cli import composition
from service.cli.composition import settings as _settings
from service.cli.processes import (
    DEFAULT_QUEUES,
    api_command,
    beat_command,
    chunk_worker_command,
    deliverer_command,
    start,
    supervise,
    worker_command,
)
from service.cli.support import run as _run
from service.ops import heartbeats, metricsdir


@click.group()
@click.version_option(package_name="predq", message="predq %(version)s")
def main() -> None:
    """predq: asynchronous predictions from scikit-learn models."""


@main.group()
def db() -> None:
    """The result store schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Run the Alembic migrations up to REVISION."""
    from migrations.runner import upgrade

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
@click.option("--example", type=click.Path(exists=True, dir_okay=False),
              help="a few input rows as the model was fitted on (.parquet, .csv, .json): pins "
                   "the column types predq cannot infer from the fitted model")
@click.option("--closed", "closed", multiple=True, metavar="COLUMN",
              help="refuse values of this categorical column the model does not know "
                   "(repeatable)")
def models_add(path: str, name: str, version: str, feature_names: str | None,
               cache_ttl: int | None, trust: tuple[str, ...], example: str | None,
               closed: tuple[str, ...]) -> None:
    """Register the joblib or .skops artifact at PATH as NAME VERSION: records its sha256,
    its typed input schema (inferred from the fitted model, pinned by --example) and the
    versions of scikit-learn, numpy and any LightGBM or XGBoost that workers must run."""
    from service.models import registry
    from service.models.examples import read_example

    settings = _settings()
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    rows = None if example is None else _run(lambda: read_example(example))
    with composition.engine(settings).begin() as conn:
        info = _run(lambda: registry.add_model(conn, settings.model_dir, path, name, version,
                                               names, cache_ttl, list(trust), example=rows,
                                               closed=closed))
    click.echo(f"registered {info.name} {info.version} ({info.kind}, {info.n_features} "
               f"features) sha256 {info.sha256}")
    click.echo(f"inputs: {info.schema.summary()}")


@models.command("list")
def models_list() -> None:
    """List every registered model version."""
    from service.models import registry

    with composition.engine().connect() as conn:
        click.echo("name\tversion\tkind\tfeatures\tsha256\tinputs")
        for info in registry.list_models(conn):
            click.echo(f"{info.name}\t{info.version}\t{info.kind}\t{info.n_features}\t"
                       f"{info.sha256[:12]}\t{info.schema.summary()}")


@models.command("demo")
def models_demo() -> None:
    """Register the demo models iris and diabetes (trained on the spot, no download)."""
    from service.cli.demo import register_demo_models

    settings = _settings()
    with composition.engine(settings).begin() as conn:
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


    client = composition.redis(timeout=2)
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

    client = composition.redis()
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
@click.option("--kind", type=click.Choice(["all", "jobs", "chunks"]), default="all",
              show_default=True, help="jobs: single jobs' micro-batches (and the reconciler); "
              "chunks: bulk jobs' chunks, at a lower CPU priority; all: both, side by side")
@click.option("--queues", default=DEFAULT_QUEUES, show_default=True,
              help="the jobs worker's queues, highest priority first")
def worker(kind: str, queues: str) -> None:
    """Run the prediction workers of this host: one for single jobs (micro-batched), one for
    bulk chunks, so a nightly bulk job never takes the processes single jobs need."""
    settings = _settings()
    env = {**os.environ, **metricsdir.export(settings.metrics_dir)}
    commands = {"jobs": [worker_command(settings, queues)],
                "chunks": [chunk_worker_command(settings)]}.get(kind) or [
        worker_command(settings, queues), chunk_worker_command(settings)]
    if len(commands) == 1:
        os.execvpe(sys.executable, [sys.executable, *commands[0]], env)
    sys.exit(supervise(start(commands, env)))


@main.command()
def up() -> None:
    """Run API, worker and (if REDIS_URL is unset) a private Redis: everything for a laptop."""
    from service.cli.up import run_all

    sys.exit(run_all(_settings(), "REDIS_URL" not in os.environ))


def _register() -> None:
    from service.cli.jobs import cancel, jobs_list, result, status, submit
    from service.cli.rollouts import compare, rollout
    from service.cli.tenants import keys, limits, schedules

    for command in (keys, limits, schedules, submit, status, jobs_list, result, cancel):
        main.add_command(command)
    models.add_command(rollout)
    models.add_command(compare)


_register()

if __name__ == "__main__":
    main()
