"""A small Python client for predq's HTTP API; `predq submit/status/result/cancel` use it.

    from service.client import Client
    client = Client("http://127.0.0.1:8000", key)
    job_id = client.submit("iris", path="rows.csv")     # or inputs=[[5.1, 3.5, 1.4, 0.2]]
    job = client.wait(job_id)
    client.result(job_id, path="predictions.csv")       # or client.result(job_id) -> dict
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import requests

from service.bulk import formats

FINAL = {"succeeded", "failed", "cancelled", "expired"}
Progress = Callable[[int, int], None]  # (done, total)


class ApiError(Exception):
    """An error answer of the API: its status and `{"code", "message", "field"}`."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        self.status = status
        self.code = str(error.get("code", "error"))
        self.field = error.get("field")
        super().__init__(f"{status} {self.code}: {error.get('message', '')}")


class Client:
    def __init__(self, url: str | None = None, key: str | None = None,
                 timeout: float = 60.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.key = key or os.environ.get("PREDQ_API_KEY") or _dev_key()
        self.timeout = timeout
        self.http = _Session(self.url)
        if self.key:
            self.http.headers["Authorization"] = f"Bearer {self.key}"

    def submit(self, model: str, inputs: list[Any] | None = None, path: str | None = None,
               *, version: str | None = None, priority: str | None = None,
               idempotency_key: str | None = None, progress: Progress | None = None) -> str:
        """Submit rows (`inputs`) or a file (`path`: .csv, .ndjson, .npy, .parquet or .arrow,
        streamed as a bulk job) and return the job id. `progress(bytes_sent, bytes_total)`."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if (inputs is None) == (path is None):
            raise ValueError("give inputs or path, not both")
        if inputs is not None:
            body = {"model": model, "inputs": inputs, "version": version, "priority": priority}
            response = self.http.post(self.url + "/v1/jobs", timeout=self.timeout,
                                      headers=headers,
                                      json={k: v for k, v in body.items() if v is not None})
        else:
            assert path is not None
            query = {k: v for k, v in {"model": model, "version": version,
                                       "priority": priority}.items() if v is not None}
            upload, mimetype = _upload(Path(path), progress)
            headers["Content-Type"] = mimetype
            response = self.http.post(self.url + "/v1/jobs", params=query, data=upload,
                                      headers=headers, timeout=max(self.timeout, 3600))
        return str(_ok(response)["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        return _ok(self.http.get(f"{self.url}/v1/jobs/{job_id}", timeout=self.timeout))

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5,
             progress: Progress | None = None) -> dict[str, Any]:
        """Poll until the job is final; `progress(rows_done, rows_total)` on each poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if progress is not None:
                progress(int(job.get("rows_done", 0)), int(job.get("rows_total", 0)))
            if job["status"] in FINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']}")
            time.sleep(poll)

    def result(self, job_id: str, path: str | None = None) -> dict[str, Any] | Path:
        """The result as a dict, or streamed into `path` in the format its suffix names
        (.json, .ndjson, .csv, .npy, .parquet, .arrow)."""
        if path is None:
            return _ok(self.http.get(f"{self.url}/v1/jobs/{job_id}/result",
                                     timeout=self.timeout))
        target = Path(path)
        fmt = formats.by_suffix(target)
        if fmt is None or fmt.write is None:
            raise ValueError(f"{target.suffix!r}: write {formats.names(formats.WRITABLE)}")
        with self.http.get(f"{self.url}/v1/jobs/{job_id}/result",
                           headers={"Accept": fmt.media_type},
                           stream=True, timeout=self.timeout) as response:
            if response.status_code != 200:
                _ok(response)
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as out:
                for block in response.iter_content(1 << 16):
                    out.write(block)
            partial.replace(target)  # a reader never sees half a file
        return target

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _ok(self.http.post(f"{self.url}/v1/jobs/{job_id}/cancel", timeout=self.timeout))

    def jobs(self, **filters: Any) -> dict[str, Any]:
        """A page of the tenant's jobs: `{"jobs": [...], "next": cursor or None}`. Filters:
        status, model, priority, id, since, until, sort, limit, cursor (None: left out)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return _ok(self.http.get(f"{self.url}/v1/jobs", params=params, timeout=self.timeout))

    def ready(self) -> dict[str, Any]:
        """`GET /readyz`: the stores' checks, the queues and live workers (no key needed);
        a 503 (not ready) is an answer too, not an error."""
        response = self.http.get(f"{self.url}/readyz", timeout=self.timeout)
        if response.status_code == 503:
            return response.json()  # type: ignore[no-any-return]
        return _ok(response)

    def workers(self) -> dict[str, Any]:
        return _ok(self.http.get(f"{self.url}/v1/workers", timeout=self.timeout))


class _Session(requests.Session):
    def __init__(self, url: str) -> None:
        super().__init__()
        self._base = url

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        try:
            return super().request(*args, **kwargs)
        except requests.ConnectionError as exc:
            raise NoApi(self._base.rstrip("/")) from exc


def _ok(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"code": "not_json", "message": response.text[:200]}}
    if response.status_code >= 400:
        raise ApiError(response.status_code, body.get("error", {}))
    return body  # type: ignore[no-any-return]


class _ProgressFile(io.RawIOBase):
    """A file that reports how much of it was read; its length gives Content-Length."""

    def __init__(self, fh: IO[bytes], total: int, progress: Progress | None) -> None:
        super().__init__()
        self._fh, self._total, self._progress, self._done = fh, total, progress, 0

    def __len__(self) -> int:
        return self._total

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = self._fh.read(size)
        self._done += len(data)
        if self._progress is not None:
            self._progress(self._done, self._total)
        return data


def _upload(path: Path, progress: Progress | None) -> tuple[Any, str]:
    fmt = formats.by_suffix(path)
    if fmt is None or fmt.read is None:
        raise ValueError(f"{path.name}: send {formats.names(formats.READABLE)}")
    fh = open(path, "rb")  # noqa: SIM115 - requests reads it to the end
    return _ProgressFile(fh, path.stat().st_size, progress), fmt.media_type


def default_url() -> str:
    """PREDQ_URL, else where `predq up` listens with the same settings (PREDQ_HOST and
    PREDQ_PORT, by default http://127.0.0.1:8000)."""
    if os.environ.get("PREDQ_URL"):
        return os.environ["PREDQ_URL"]
    host = os.environ.get("PREDQ_HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine answers on loopback
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('PREDQ_PORT', '8000')}"


class NoApi(ConnectionError):
    """Nothing answered at the client's URL."""

    def __init__(self, url: str) -> None:
        super().__init__(f"no predq API at {url}; set PREDQ_URL (or PREDQ_PORT) to where "
                         "`predq up` or `predq api` listens")
        self.url = url


def dev_key_path() -> Path:
    """Where `predq up` keeps its development key, seen from this directory."""
    return Path(os.environ.get("PREDQ_VAR_DIR", "var")) / "dev-api-key"


def _dev_key() -> str | None:
    """`predq up`'s development key, for a laptop."""
    path = dev_key_path()
    return path.read_text().strip() if path.exists() else None
