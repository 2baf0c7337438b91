"""CPU-cheap HTTP/1.1 load generator: C keep-alive connections, N POSTs, bounded by a deadline."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """Load run result.

    Per-response latency (ms), job id ("" if none) and wall-clock send time; status counts;
    run span.
    """

    latencies_ms: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # HTTP status codes
    without_id: int = 0  # 2xx answers with no job id (a synchronous predict's, say)
    started: float = 0.0  # time.time() at start
    finished: float = 0.0  # time.time() at end
    sent_at: list[float] = field(default_factory=list)  # time.time() when each request was sent
    codes: list[int] = field(default_factory=list)  # the HTTP status of each response
    client_cpu_s: float = 0.0  # CPU seconds (user+sys) this process spent during the run

    def record(self, status: int, body: bytes, sent_wall: float, latency_s: float) -> None:
        """Store one response; the id is parsed from a JSON body when the status is 2xx."""
        self.statuses[str(status)] += 1
        job_id = ""
        if 200 <= status < 300:
            try:
                job_id = str(json.loads(body)["id"])
            except (ValueError, KeyError, TypeError):
                self.without_id += 1
        self.latencies_ms.append(latency_s * 1000.0)
        self.ids.append(job_id)
        self.sent_at.append(sent_wall)
        self.codes.append(status)


def _head(method: str, url_path: str, host: str, port: int, headers: dict[str, str]) -> bytes:
    """Request line and fixed headers (without Content-Length and the final blank line)."""
    lines = [f"{method} {url_path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


async def _conn_worker(
    host: str,
    port: int,
    head: bytes,
    bodies: Callable[[int], bytes],
    counter: itertools.count[int],
    n: int,
    deadline: float,
    res: LoadResult,
    schedule: Callable[[int], float] | None = None,
) -> None:
    """One keep-alive connection sending requests until n are taken or the deadline passes.

    With `schedule` (open loop), request i waits for its perf_counter time schedule(i), and
    its latency counts from that time, so a slow server cannot hide queueing (no coordinated
    omission)."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.monotonic() < deadline:
            i = next(counter)
            if i >= n:
                return
            body = bodies(i)
            req = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
            sent_wall, t0 = time.time(), time.perf_counter()
            if schedule is not None:
                due = schedule(i)
                if due > t0:
                    await asyncio.sleep(due - t0)
                sent_wall, t0 = sent_wall + (due - t0), due
            try:
                if writer is not None and reader is not None and reader.at_eof():
                    writer.close()  # the server closed an idle keep-alive connection
                    reader = writer = None
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(req)
                raw = await reader.readuntil(b"\r\n\r\n")
                status = int(raw[9:12])
                length, close = 0, False
                for line in raw.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value)
                    elif lname == b"connection" and value.strip().lower() == b"close":
                        close = True
                payload = await reader.readexactly(length) if length else b""
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                res.statuses["conn_error"] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            res.record(status, payload, sent_wall, time.perf_counter() - t0)
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _run_async(
    url_path: str,
    host: str,
    port: int,
    bodies: Callable[[int], bytes],
    headers: dict[str, str],
    n: int,
    concurrency: int,
    deadline_s: float,
    res: LoadResult,
    rate: float | None = None,
) -> None:
    """Run `concurrency` connection workers; cancel whatever is still running at the deadline."""
    head = _head("POST", url_path, host, port, headers)
    counter = itertools.count()
    deadline = time.monotonic() + deadline_s
    start = time.perf_counter()
    schedule = None if rate is None else (lambda i: start + i / rate)
    tasks = [
        asyncio.create_task(
            _conn_worker(host, port, head, bodies, counter, n, deadline, res, schedule)
        )
        for _ in range(concurrency)
    ]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s + 1.0)
    for t in pending:
        t.cancel()
        res.statuses["timeout"] += 1
    for t in done:
        if t.exception() is not None:
            res.statuses[f"error:{type(t.exception()).__name__}"] += 1


def _thread_worker(
    url_path: str,
    host: str,
    port: int,
    bodies: Callable[[int], bytes],
    headers: dict[str, str],
    counter: itertools.count[int],
    n: int,
    deadline: float,
    res: LoadResult,
    lock: threading.Lock,
) -> None:
    """http.client keep-alive connection in a thread (the alternative implementation)."""
    conn = http.client.HTTPConnection(host, port, timeout=max(1.0, deadline - time.monotonic()))
    try:
        while time.monotonic() < deadline:
            i = next(counter)
            if i >= n:
                return
            body = bodies(i)
            sent_wall, t0 = time.time(), time.perf_counter()
            try:
                conn.request("POST", url_path, body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException):
                with lock:
                    res.statuses["conn_error"] += 1
                conn.close()
                continue
            with lock:
                res.record(resp.status, payload, sent_wall, time.perf_counter() - t0)
    finally:
        conn.close()


def run_load(
    url_path: str,
    host: str,
    port: int,
    bodies: Callable[[int], bytes],
    headers: dict[str, str],
    n: int,
    concurrency: int,
    deadline_s: float,
    impl: str = "asyncio",
    rate: float | None = None,
) -> LoadResult:
    """POST bodies(i) for i < n over `concurrency` keep-alive connections, stopping at deadline_s.

    impl is "asyncio" (raw streams, the default: cheaper per request) or "threads" (http.client).
    rate (requests/s, asyncio only) paces an open-loop load instead of a closed loop.
    """
    res = LoadResult()
    cpu0 = time.process_time()
    res.started = time.time()
    if impl == "asyncio":
        asyncio.run(
            _run_async(url_path, host, port, bodies, headers, n, concurrency, deadline_s, res, rate)
        )
    elif impl == "threads":
        counter, lock = itertools.count(), threading.Lock()
        deadline = time.monotonic() + deadline_s
        threads = [
            threading.Thread(
                target=_thread_worker,
                daemon=True,
                args=(url_path, host, port, bodies, headers, counter, n, deadline, res, lock),
            )
            for _ in range(concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()) + 2.0)
    else:
        raise ValueError(f"unknown impl {impl!r}")
    res.finished = time.time()
    res.client_cpu_s = time.process_time() - cpu0
    return res
