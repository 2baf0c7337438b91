"""gunicorn server hooks for `predq api` (`-c python:service.cli.gunicorn_conf`)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from gunicorn import glogging, util
from gunicorn.http import wsgi


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn answers what never reaches the app itself (a malformed request line, a URI or
    header past its limits: 400, 414, 431): in predq's JSON error shape, not its HTML page."""
    code = reason.lower().replace(" ", "_").replace("-", "_")
    body = json.dumps({"error": {"code": code, "message": (mesg or reason)[:300]}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


util.write_error = write_json_error  # the workers call util.write_error(...) at each error


class OneSendResponse(wsgi.Response):
    """gunicorn's response, but its head goes out in the same send as the first body bytes:
    one system call and one wake-up of the client per answer instead of two (measured: the
    second send was 4-5% of the API's CPU per request). Chunked bodies, and answers without a
    body, go out as gunicorn sends them."""

    _head = b""

    def write(self, arg: bytes) -> None:
        if not self.headers_sent and arg and not self.chunked and not self._omits_body:  # type: ignore[has-type]
            tosend = self.default_headers()
            tosend.extend(f"{k}: {v}\r\n" for k, v in self.headers)
            self._head = ("".join(tosend) + "\r\n").encode("latin-1")
            self.headers_sent = True
        super().write(arg)
        if self._head:  # no body bytes went out after all (a Content-Length of 0)
            head, self._head = self._head, b""
            util.write(self.sock, head)

    def _emit_body(self, data: bytes) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        super()._emit_body(data)


wsgi.Response = OneSendResponse  # type: ignore[misc]  # wsgi.create() builds every response


def child_exit(_server: Any, worker: Any) -> None:
    """A worker process ended: drop its live multiprocess metrics (its counters stay counted)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _logconfig() -> dict[str, Any]:
    """gunicorn's own lines (start, worker exits, errors) in predq's format, at predq's level:
    `predq up` asks for warnings and errors only, so "Starting gunicorn", "Booting worker" and
    "Shutting down" are not printed there."""
    level = os.environ.get("PREDQ_LOG_LEVEL", "INFO").upper()
    json_format = os.environ.get("PREDQ_LOG_FORMAT", "json") == "json"
    formatter: dict[str, Any] = (
        {"()": "pythonjsonlogger.json.JsonFormatter",
         "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
         "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger",
                           "process": "pid"},
         "datefmt": "%Y-%m-%dT%H:%M:%S%z"}
        if json_format else {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"})
    handler = {"class": "logging.StreamHandler", "formatter": "predq",
               "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"predq": formatter},
        "handlers": {"predq": handler},
        # gunicorn merges this over its defaults: every handler it names must be defined here.
        "root": {"level": level, "handlers": ["predq"]},
        "loggers": {"gunicorn.error": {"level": level, "handlers": ["predq"],
                                       "propagate": False},
                    # No access log: it would cost a line per request (measured: 8% of the
                    # API's CPU); /metrics counts requests by route and status instead.
                    "gunicorn.access": {"level": "WARNING", "handlers": ["predq"],
                                        "propagate": False}},
    }


class Logger(glogging.Logger):
    """gunicorn's logger, but it builds an access line only when `gunicorn.access` would print
    it: with a logging config, gunicorn otherwise formats every request's atoms for a logger at
    WARNING that drops them (measured: 0.03 ms per request, 4% of the API's CPU)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self._access_log_enabled = (self._access_log_enabled  # type: ignore[has-type]
                                    and self.access_log.isEnabledFor(logging.INFO))


logconfig_dict = _logconfig()
logger_class = Logger
