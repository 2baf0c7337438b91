"""Logging for every predq process: one JSON object per line in production, readable lines for
`make run`. A line about a job carries `job_id` and `tenant`; `request_id` follows a job from
the HTTP request that submitted it (the job row keeps it) to the worker that runs it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import uuid
from contextvars import ContextVar
from types import TracebackType

from pythonjsonlogger.json import JsonFormatter

#: The request being served by this thread or greenlet, if any.
request_id: ContextVar[str | None] = ContextVar("predq_request_id", default=None)
CONTEXT = ("request_id", "job_id", "tenant", "model", "version", "status", "event_id")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_request_id(offered: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    if offered and _VALID_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class _Text(logging.Formatter):
    """`time level logger: message key=value ...` with the context fields that are set."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{key}={getattr(record, key)}" for key in CONTEXT
                         if getattr(record, key, None) is not None)
        return f"{line}  [{extra}]" if extra else line


def configure(level: str, fmt: str, stream: object = None) -> None:
    """Send every logger of the process through one handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(_Context())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "process": "pid"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        ))
    else:
        handler.setFormatter(_Text("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.captureWarnings(True)  # warnings become log lines in the same format
    # An exception nothing caught (a background thread's, or the process's own at exit) is a
    # line in the same format too, not a bare traceback among JSON lines.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Celery's "Task ... received" and "... succeeded" lines are per message (a reconciler run
    # every few seconds, a webhook attempt): predq logs what matters about jobs itself.
    for noisy in ("urllib3", "kombu", "amqp", "celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    for name, pattern in ORDINARY.items():
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, _Ordinary)]
        logger.addFilter(_Ordinary(pattern))


#: Lines that libraries log as warnings about things that need no operator: numpy's overflow
#: in a model's arithmetic (the job's result says what came of it), kombu handing a message
#: back to its queue when the consumers stop (it is delivered when one starts again). Shown
#: at INFO, so `make run`'s "only warnings and errors" holds.
ORDINARY = {
    "py.warnings": re.compile(r"RuntimeWarning: (overflow|invalid value|divide by zero|underflow)"
                              r" encountered|UndeliverableWarning"),
    "kombu.transport.virtual.base": re.compile(r"Requeuing undeliverable message"),
}


class _Ordinary(logging.Filter):
    """Demote a matching warning to INFO: dropped unless the process logs INFO."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not self.pattern.search(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("predq").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("predq").error("uncaught exception in thread %s", name,
                                     exc_info=(args.exc_type, args.exc_value,
                                               args.exc_traceback))  # type: ignore[arg-type]
