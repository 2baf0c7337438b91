"""The command lines of predq's long-running processes: API, workers (one for single jobs, one
for bulk chunks), deliverer, beat. Used by `predq api|worker|deliverer|beat` (which exec or
supervise them) and by `predq up` (which starts them all); and how they are stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from service.core.messaging import (
    CHUNK_LANES,
    CHUNK_SHADOW_QUEUE,
    MAINTENANCE_QUEUE,
    PREDICT_QUEUES,
    SHADOW_QUEUE,
    WEBHOOK_QUEUE,
)
from service.core.settings import Settings

# maintenance first: reconciler runs are rare and short, and must not wait behind a backlog;
# shadow runs last: a worker takes one only when every other queue is empty.
DEFAULT_QUEUES = ",".join((MAINTENANCE_QUEUE, *PREDICT_QUEUES, SHADOW_QUEUE))


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
    return ["-m", "celery", "-A", "workers.main", *_quiet(settings), "beat", "--schedule", schedule,
            "--loglevel", settings.log_level]


def worker_command(settings: Settings, queues: str = DEFAULT_QUEUES) -> list[str]:
    """The worker of single jobs (and the reconciler): celery-batches micro-batches them."""
    concurrency = settings.worker_concurrency or os.cpu_count() or 1
    return ["-m", "celery", "-A", "workers.main", *_quiet(settings), "worker", "-Q", queues,
            "--concurrency", str(concurrency), "--loglevel", settings.log_level,
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def chunk_worker_command(settings: Settings) -> list[str]:
    """The worker of bulk chunks: a chunk a process, none held in advance beyond one (a
    prefetch of 1: the dispatch, not a prefetch buffer, decides what runs next), at a lower
    CPU priority (it sets `bulk_nice` itself, see workers/signals.py); the shadows of chunks
    after them, when no chunk waits."""
    concurrency = settings.bulk_concurrency or os.cpu_count() or 1
    return ["-m", "celery", "-A", "workers.main", *_quiet(settings), "worker", "-Q",
            ",".join((*CHUNK_LANES, CHUNK_SHADOW_QUEUE)), "--concurrency", str(concurrency),
            "--prefetch-multiplier", "1",
            "--hostname", "chunks@%h", "--loglevel", settings.log_level,
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def start(commands: list[list[str]], env: Mapping[str, str]) -> list[subprocess.Popen[bytes]]:
    """Start each command (python arguments) in a session of its own: a Ctrl-C reaches only
    the supervisor, which then stops each child's main process once (`stop_all`). A child
    is sent SIGTERM by the kernel if the supervisor dies without stopping it (SIGKILL, OOM):
    no worker outlives the command that started it."""
    return [subprocess.Popen([sys.executable, *args], env=dict(env), start_new_session=True,
                             preexec_fn=_die_with_parent)
            for args in commands]


def _die_with_parent() -> None:
    """In the child, before exec: PR_SET_PDEATHSIG (Linux); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_all(children: list[subprocess.Popen[bytes]], grace: float = 25) -> None:
    """SIGTERM each child's main process once; SIGKILL the group of any still there after grace.

    The main process only, as `docker stop` does: a worker's main process then runs Celery's
    warm shutdown (the batch in hand commits, buffered messages go back) and stops its own pool,
    and gunicorn's master its workers. A SIGTERM to the whole group would kill the pool
    processes under a batch, and leave Celery's shutdown racing their deaths."""
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):  # also reaps grandchildren
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until a signal (Ctrl-C, SIGTERM as `docker stop` sends, SIGHUP) or a child's exit,
    then stop every child alike; 0 after a signal, 1 when a child died first."""
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        stop_all(children)
    return 0 if stopping else 1


def _quiet(settings: Settings) -> list[str]:
    """No start-up banner where every line must be JSON, nor where only warnings are wanted."""
    quiet = settings.log_format == "json" or settings.log_level.upper() in (
        "WARNING", "ERROR", "CRITICAL")
    return ["--quiet"] if quiet else []
