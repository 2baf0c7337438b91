"""Broker content is untrusted: messages pushed straight into Redis, as a hostile or broken
producer would, in kombu's own envelope (`kombu.transport.redis.Channel._put`), to a real worker.

Each message gets a fresh delivery tag, so its dead letter and its log line are found by tag in
the shared Redis and the shared worker's log, whatever else ran before."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from service.core.settings import Settings
from tests.support.processes import ROOT, WorkerProcess
from tests.support.tenants import Tenant
from workers.deadletter import CLIP, DEAD_LETTERS, KEEP, record

QUEUE = "predict.normal"
PICKLE = "application/x-python-serialize"
YAML = "application/x-yaml"
JSON = "application/json"


class OpensAFile:
    """Unpickling this creates `path`: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def task_headers(task: str = "predq.predict", **changes: Any) -> dict[str, Any]:
    """Celery's protocol 2 headers, as `send_task` writes them."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
               "group": None, "eta": None, "expires": None, "retries": 0,
               "timelimit": [None, None], "argsrepr": "", "kwargsrepr": "", "origin": "test"}
    return {k: v for k, v in {**headers, **changes}.items() if v is not ...}


def push(client: redis.Redis, queue: str, body: bytes, content_type: str,
         headers: dict[str, Any]) -> str:
    """LPUSH one message onto `queue` in kombu's Redis envelope; return its delivery tag."""
    tag = str(uuid.uuid4())
    client.lpush(queue, json.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": headers,
        "properties": {"correlation_id": headers.get("id"), "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": tag},
    }))
    return tag


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}"
        time.sleep(0.05)
    return result


class DeadLetters:
    """The dead letters of the messages a test pushed, found by delivery tag."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.tags: set[str] = set()

    def push(self, queue: str, body: bytes, content_type: str, headers: dict[str, Any]) -> str:
        tag = push(self.client, queue, body, content_type, headers)
        self.tags.add(tag)
        return tag

    def entries(self, tag: str) -> list[dict[str, Any]]:
        found = (json.loads(raw) for raw in self.client.lrange(DEAD_LETTERS, 0, -1))
        return [entry for entry in found if entry["delivery_tag"] == tag]

    def wait(self, tag: str) -> dict[str, Any]:
        return wait_for(lambda: self.entries(tag), f"dead letter {tag}")[0]  # type: ignore[no-any-return]

    def assert_gone(self, queue: str, tag: str) -> None:
        """Acknowledged, and not back in its queue: nothing can deliver it again."""
        wait_for(lambda: not self.client.hexists("unacked", tag), f"{tag} acknowledged")
        assert not [m for m in self.client.lrange(queue, 0, -1) if tag.encode() in m]

    def cleanup(self) -> None:
        for raw in self.client.lrange(DEAD_LETTERS, 0, -1):
            if json.loads(raw)["delivery_tag"] in self.tags:
                self.client.lrem(DEAD_LETTERS, 0, raw)


@pytest.fixture
def dead_letters(settings: Settings) -> Iterator[DeadLetters]:
    letters = DeadLetters(redis.Redis.from_url(settings.redis_url))
    yield letters
    letters.cleanup()
    letters.client.close()


def log_lines(output: str, tag: str) -> list[dict[str, Any]]:
    """The worker's JSON log records about delivery tag `tag`."""
    records = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [r for r in records if r.get("delivery_tag") == tag]


def assert_still_runs_jobs(tenant: Tenant) -> None:
    job = tenant.wait(tenant.submit("iris", [[5.1, 3.5, 1.4, 0.2]]))
    assert job["status"] == "succeeded", job


@pytest.mark.parametrize("content_type,with_task_headers", [
    (PICKLE, True), (PICKLE, False), (YAML, True),
], ids=["pickle-task-message", "pickle-bare", "yaml-task-message"])
def test_disallowed_content_is_dead_lettered_and_never_decoded(
    worker: WorkerProcess, tenant: Tenant, dead_letters: DeadLetters, tmp_path: Path,
    content_type: str, with_task_headers: bool,
) -> None:
    marker = tmp_path / "code-ran"
    body = (pickle.dumps(OpensAFile(marker)) if content_type == PICKLE
            else f'!!python/object/apply:builtins.open ["{marker}", "w"]'.encode())
    headers = task_headers() if with_task_headers else {}
    tag = dead_letters.push(QUEUE, body, content_type, headers)

    entry = dead_letters.wait(tag)
    assert "Refusing to deserialize untrusted content" in entry["reason"]
    assert entry["queue"] == QUEUE and entry["content_type"] == content_type
    assert entry["headers"] == headers and entry["body_bytes"] == len(body)
    assert entry["body"] == body.decode("utf-8", "backslashreplace")  # kept as it came
    lines = wait_for(lambda: log_lines(worker.output(), tag), f"log line for {tag}")
    assert lines[0]["level"] == "ERROR" and QUEUE in lines[0]["message"]
    assert "untrusted content" in lines[0]["message"]
    dead_letters.assert_gone(QUEUE, tag)

    assert_still_runs_jobs(tenant)
    assert not marker.exists()
    assert len(dead_letters.entries(tag)) == len(log_lines(worker.output(), tag)) == 1


JOB_ID = str(uuid.uuid4())
MALFORMED = {  # name: (queue, body, content type, headers, what the dead letter says)
    "not-json": (QUEUE, b"{not json", JSON, task_headers(), "cannot decode the body"),
    "not-json-or-task": (QUEUE, b"\xff\xfe", JSON, {}, "cannot decode the body"),
    "json-but-no-task-name": (QUEUE, b'{"hello": 1}', JSON, {}, "not a task message"),
    "unknown-task": (QUEUE, b"[[], {}, {}]", JSON, task_headers("predq.nope"), "unknown task"),
    "body-an-object": (QUEUE, b'{"ids": ["%s"]}' % JOB_ID.encode(), JSON, task_headers(),
                       "is not [args, kwargs, embed]"),
    "body-two-items": (QUEUE, b'[[["%s"]], {}]' % JOB_ID.encode(), JSON, task_headers(),
                       "is not [args, kwargs, embed]"),
    "no-task-id": (QUEUE, b"[[[]], {}, {}]", JSON, task_headers(id=...), "no task id"),
    "bad-timelimit": (QUEUE, b"[[[]], {}, {}]", JSON, task_headers(timelimit="soon"),
                      "timelimit"),
    "ids-not-strings": (QUEUE, b"[[[1, 2]], {}, {}]", JSON, task_headers(), "do not fit"),
    "ids-not-a-list": (QUEUE, b'[["%s"], {}, {}]' % JOB_ID.encode(), JSON, task_headers(),
                       "do not fit"),
    "nul-in-an-id": (QUEUE, b'[[["a\\u0000b"]], {}, {}]', JSON, task_headers(), "do not fit"),
    "unexpected-kwargs": (QUEUE, b'[[[]], {"priority": "high"}, {}]', JSON, task_headers(),
                          "do not fit"),
    "reconcile-with-args": ("maintenance", b"[[1], {}, {}]", JSON,
                            task_headers("predq.reconcile"), "do not fit"),
    "huge-and-not-json": (QUEUE, b"[" * 1_000_000, JSON, task_headers(),
                          "cannot decode the body"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_message_is_dead_lettered_once_and_the_worker_goes_on(
    worker: WorkerProcess, tenant: Tenant, dead_letters: DeadLetters, name: str,
) -> None:
    queue, body, content_type, headers, reason = MALFORMED[name]
    tag = dead_letters.push(queue, body, content_type, headers)

    entry = dead_letters.wait(tag)
    assert reason in entry["reason"], entry["reason"]
    assert entry["queue"] == queue and entry["body_bytes"] == len(body)
    assert len(entry["body"]) <= CLIP and entry["time"] and entry["worker"]
    lines = wait_for(lambda: log_lines(worker.output(), tag), f"log line for {tag}")
    assert lines[0]["level"] == "ERROR" and lines[0]["queue"] == queue
    assert reason in lines[0]["reason"] and tag in lines[0]["message"]
    dead_letters.assert_gone(queue, tag)

    assert_still_runs_jobs(tenant)
    assert len(dead_letters.entries(tag)) == len(log_lines(worker.output(), tag)) == 1


def test_deliverer_dead_letters_what_it_must_not_run(
    settings: Settings, dead_letters: DeadLetters, tmp_path: Path,
) -> None:
    marker = tmp_path / "code-ran"
    deliverer = WorkerProcess(settings, tmp_path / "deliverer.log", deliverer=True)
    try:
        tags = {
            dead_letters.push("webhooks", pickle.dumps(OpensAFile(marker)), PICKLE,
                              task_headers("predq.deliver")): "untrusted content",
            dead_letters.push("webhooks", b"[[[1], 2], {}, {}]", JSON,
                              task_headers("predq.deliver")): "do not fit",
        }
        for tag, reason in tags.items():
            assert reason in dead_letters.wait(tag)["reason"]
            wait_for(lambda t=tag: log_lines(deliverer.output(), t), f"log line for {tag}")
            dead_letters.assert_gone("webhooks", tag)
        assert not marker.exists()
    finally:
        deliverer.stop()


def test_operator_lists_and_purges_dead_letters_and_the_list_is_capped(
    settings: Settings, dead_letters: DeadLetters,
) -> None:
    for n in range(KEEP + 3):
        record(dead_letters.client, {"delivery_tag": f"cap-{n}", "reason": "test"})
    assert dead_letters.client.llen(DEAD_LETTERS) == KEEP
    env = {**os.environ, "REDIS_URL": settings.redis_url, "PYTHONPATH": str(ROOT)}

    def predq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "dead-letters", *args],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                              check=True)

    listed = predq("--last", "2")
    assert [json.loads(line)["delivery_tag"] for line in listed.stdout.splitlines()] == [
        f"cap-{KEEP + 2}", f"cap-{KEEP + 1}"]
    assert listed.stderr.startswith(f"{KEEP} dead letters")
    assert predq("--purge").stdout.strip() == f"purged {KEEP} dead letters"
    assert dead_letters.client.llen(DEAD_LETTERS) == 0
