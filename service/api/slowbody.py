"""A request body must keep arriving: a client that stalls between two reads, or takes too long
in all, gets 408 and loses the connection instead of holding it (slow-loris).

gunicorn bounds the wait for a request's headers itself (`--keep-alive` seconds under gevent);
this bounds the body, which the views read. It needs the client socket, which gunicorn puts in
the WSGI environ; under other servers it does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from service.core.errors import PredqError

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BodyTimeout(PredqError):
    status = 408
    code = "request_timeout"


class SlowBodyGuard:
    """WSGI middleware: `read_timeout` seconds at most between reads of the body, and
    `body_timeout` seconds for all of it."""

    def __init__(self, app: WSGIApp, read_timeout: float, body_timeout: float) -> None:
        self.app = app
        self.read_timeout = read_timeout
        self.body_timeout = body_timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is None or not _has_body(environ) or _arrived(environ["wsgi.input"]):
            return self.app(environ, start_response)
        deadline = time.monotonic() + self.body_timeout
        environ["wsgi.input"] = _TimedInput(environ["wsgi.input"], sock, self.read_timeout,
                                            deadline, self.body_timeout)
        try:
            return self.app(environ, start_response)
        finally:
            sock.settimeout(None)  # the response is written without a read timeout


def _arrived(body: Any) -> bool:
    """The whole body came with the headers (most API requests): gunicorn holds it in its
    buffer and reading it touches no socket, so there is nothing to time. Reads gunicorn's
    reader state; anything unexpected counts as not arrived."""
    reader = getattr(body, "reader", None)
    length = getattr(reader, "length", None)
    buffer = getattr(getattr(reader, "unreader", None), "buf", None)
    if not isinstance(length, int) or not isinstance(buffer, io.BytesIO):
        return False
    with buffer.getbuffer() as view:
        return view.nbytes >= length


@functools.cache
def _gevent() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def _overall(seconds: float, exc: BaseException) -> Any:
    if _gevent():
        from gevent import Timeout

        return Timeout(seconds, exc)
    return contextlib.nullcontext()


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH") or "0"
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or length != "0"


class _TimedInput:
    """wsgi.input whose every read waits at most what is left of both timeouts."""

    def __init__(self, inner: Any, sock: socket.socket, read_timeout: float, deadline: float,
                 body_timeout: float) -> None:
        self._inner = inner
        self._sock = sock
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._body_timeout = body_timeout

    def _call(self, method: str, *args: Any) -> Any:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._expired()
        self._sock.settimeout(min(self._read_timeout, left))
        # gunicorn's read(n) loops over recv until it has n bytes, so a socket timeout bounds
        # only each recv; under gevent (predq's worker class) the whole call is bounded too.
        try:
            with _overall(left, self._expired()):
                return getattr(self._inner, method)(*args)
        except TimeoutError:
            if self._deadline - time.monotonic() <= 0:
                raise self._expired() from None
            raise BodyTimeout(f"the request body stalled for more than {self._read_timeout:g} "
                              "seconds") from None

    def _expired(self) -> BodyTimeout:
        return BodyTimeout(f"the request body did not arrive within {self._body_timeout:g} "
                           "seconds")

    def read(self, size: int | None = -1) -> bytes:
        return self._call("read", size)  # type: ignore[no-any-return]

    def readline(self, size: int | None = -1) -> bytes:
        return self._call("readline", size)  # type: ignore[no-any-return]

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return self._call("readlines", hint)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line
