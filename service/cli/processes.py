"""The command lines of predq's long-running processes: API, worker, deliverer, beat. Used by
`predq api|worker|deliverer|beat` (which exec them) and by `predq up` (which starts them all)."""

from __future__ import annotations

import os

from service.core.messaging import MAINTENANCE_QUEUE, PREDICT_QUEUES, WEBHOOK_QUEUE
from service.core.settings import Settings

# maintenance first: reconciler runs are rare and short, and must not wait behind a backlog.
DEFAULT_QUEUES = ",".join((MAINTENANCE_QUEUE, *PREDICT_QUEUES))


def api_command(settings: Settings) -> list[str]:
    # gevent (the default; see Settings.api_worker_class): waiting requests cost a greenlet.
    return ["-m", "gunicorn", "service.api.wsgi:app", "--bind", f"{settings.host}:{settings.port}",
            "--config", "python:service.cli.gunicorn_conf",  # metrics bookkeeping, log format
            "--worker-class", settings.api_worker_class, "--workers", str(settings.api_workers),
            "--worker-connections", str(settings.api_connections), "--timeout", "30",
            "--graceful-timeout", "20", "--log-level", "warning",
            "--no-control-socket"]  # predq does not use it; one per host would be shared


def deliverer_command(settings: Settings) -> list[str]:
    # Threads: an attempt mostly waits on the receiver; never on a prediction worker's pool.
    return ["-m", "celery", "-A", "workers.main", *_quiet(settings), "worker", "-Q", WEBHOOK_QUEUE,
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
    """No start-up banner where every line must be JSON, nor where only warnings are wanted."""
    quiet = settings.log_format == "json" or settings.log_level.upper() in (
        "WARNING", "ERROR", "CRITICAL")
    return ["--quiet"] if quiet else []
