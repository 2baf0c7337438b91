"""Structured logs: JSON lines that name the job, its tenant and the request that submitted it."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from service.ops import logs
from tests.faults.conftest import Stack, stack  # noqa: F401 - the fixture
from tests.support.processes import ApiProcess, WorkerProcess, free_port
from tests.support.tenants import Tenant


@pytest.fixture
def restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def test_json_lines_carry_the_context_and_text_lines_show_it(restore_logging: None) -> None:
    out = io.StringIO()
    logs.configure("INFO", "json", out)
    token = logs.request_id.set("req-1")
    try:
        logging.getLogger("service.test").info("job accepted", extra={"job_id": "j1",
                                                                     "tenant": "acme"})
    finally:
        logs.request_id.reset(token)
    line = json.loads(out.getvalue())
    assert line["message"] == "job accepted" and line["level"] == "INFO"
    assert (line["job_id"], line["tenant"], line["request_id"]) == ("j1", "acme", "req-1")
    assert line["time"] and line["logger"] == "service.test"
    text = io.StringIO()
    logs.configure("INFO", "text", text)
    logging.getLogger("service.test").warning("job finished", extra={"job_id": "j2"})
    assert "job finished" in text.getvalue() and "job_id=j2" in text.getvalue()


def test_request_ids_are_answered_and_sane(tenant: Tenant) -> None:
    given = tenant.get("/v1/models", headers={"X-Request-ID": "trace-42"})
    assert given.headers["X-Request-ID"] == "trace-42"
    made = tenant.get("/v1/models", headers={"X-Request-ID": "bad id; DROP " + "x" * 80})
    assert "DROP" not in made.headers["X-Request-ID"]
    assert len(made.headers["X-Request-ID"]) == 32  # a fresh uuid4 hex instead


# Celery prints this one itself (not through logging) when it receives SIGTERM.
CELERY_SHUTDOWN_NOTICE = "worker: Warm shutdown (MainProcess)"


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the file, each of which must be a JSON object."""
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and line != CELERY_SHUTDOWN_NOTICE]
    parsed = []
    for number, line in enumerate(lines):
        try:
            value = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}: not JSON:\n" +
                                 "\n".join(lines[number:number + 40])) from None
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


def test_a_job_is_followed_from_request_to_worker_in_json_logs(
    stack: Callable[..., Stack],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    s = stack()  # a private Redis: no other worker can take the job
    tenant = s.tenant()
    port = free_port()
    # Per-job lines of jobs that succeed are DEBUG lines.
    json_settings = s.settings.replace(port=port, log_format="json", metrics_dir="",
                                       log_level="DEBUG")
    api_log = tmp_path / "api.log"
    api = ApiProcess(json_settings, api_log)
    worker = WorkerProcess(json_settings, tmp_path / "worker.log")
    url = api.url
    try:
        response = requests.post(url + "/v1/jobs", headers={**tenant.http.headers,
                                                            "X-Request-ID": "trace-job-1"},
                                 json={"model": "iris", "inputs": [[5.1, 3.5, 1.4, 0.2]]},
                                 timeout=10)
        assert response.status_code == 202 and response.headers["X-Request-ID"] == "trace-job-1"
        job_id = response.json()["id"]
        assert tenant.wait(job_id)["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while "job finished" not in worker.output() or job_id not in worker.output():
            assert time.monotonic() < deadline, worker.output()[-2000:]
            time.sleep(0.1)
    finally:
        api.stop()
        worker.stop()
    accepted = [line for line in _json_lines(api_log) if line.get("job_id") == job_id]
    assert [line["message"] for line in accepted] == ["job accepted"]
    assert accepted[0]["tenant"] == tenant.name and accepted[0]["request_id"] == "trace-job-1"
    finished = [line for line in _json_lines(worker.log_path) if line.get("job_id") == job_id]
    assert [line["message"] for line in finished] == ["job finished"]
    assert finished[0]["request_id"] == "trace-job-1" and finished[0]["tenant"] == tenant.name
    assert finished[0]["status"] == "succeeded" and finished[0]["model"] == "iris"


def _warn_through_logs(level: str, *shown: tuple[str, type[Warning]]) -> str:
    """Configure logging at `level` (inside pytest's own warning capture, which it restores),
    warn each of `shown`, and return what was printed."""
    import warnings

    out = io.StringIO()
    with warnings.catch_warnings():
        logging.captureWarnings(False)  # an earlier configure's capture: start afresh
        logs.configure(level, "text", out)
        warnings.simplefilter("always")
        for text, kind in shown:
            warnings.warn(text, kind, stacklevel=1)
        logging.captureWarnings(False)
    return out.getvalue()


def test_ordinary_library_warnings_wait_for_info(restore_logging: None) -> None:
    shown = _warn_through_logs("WARNING", ("overflow encountered in matmul", RuntimeWarning),
                               ("something a person must see", UserWarning))
    assert "something a person must see" in shown
    assert "overflow" not in shown, shown
    out = io.StringIO()
    logs.configure("WARNING", "text", out)
    logging.getLogger("kombu.transport.virtual.base").warning(
        "Requeuing undeliverable message for queue %r: No consumers.", "predict.normal")
    assert out.getvalue() == ""
    verbose = _warn_through_logs("INFO", ("overflow encountered in matmul", RuntimeWarning))
    assert "INFO    py.warnings" in verbose  # shown, at INFO, when asked for
