"""Every shell example in README.md runs as printed against a real `predq up`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support.processes import ROOT, free_port

README = (ROOT / "README.md").read_text()


def _blocks(after: str, until: str) -> list[str]:
    section = README.split(after, 1)[1].split(until, 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


@pytest.mark.timeout(300)  # a whole `predq up` and every example, a million-row job among them
def test_readme_examples_work_as_printed(tmp_path: Path) -> None:
    """The tour, the bulk examples, the local webhook recipe (predq allowed to reach a receiver
    on this machine, which checks every signature) and the operator commands, pasted into a
    shell in README order against `predq up`."""
    port, hook_port = free_port(), free_port()
    restart, register, receiver = _blocks("## Webhooks", "## Models, keys, operators")
    assert restart.strip() == "PREDQ_WEBHOOK_ALLOW_HOSTS=127.0.0.1:9000 make run"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PREDQ_VAR_DIR=str(tmp_path / "var"), PREDQ_MODEL_DIR=str(tmp_path / "var/models"),
               PREDQ_PORT=str(port), PYTHONPATH=str(ROOT),
               PREDQ_WEBHOOK_ALLOW_HOSTS=f"127.0.0.1:{hook_port}")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)

    def local(script: str) -> str:
        return (script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
                .replace("127.0.0.1:9000", f"127.0.0.1:{hook_port}")
                .replace('("127.0.0.1", 9000)', f'("127.0.0.1", {hook_port})'))

    log = open(tmp_path / "up.log", "w+")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], env=env, cwd=tmp_path,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    hooks = None
    try:
        deadline = time.monotonic() + 120
        while "Try it:" not in (tmp_path / "up.log").read_text():
            assert time.monotonic() < deadline and up.poll() is None, \
                (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.2)
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + local(register)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr + done.stdout
        endpoint = json.loads((tmp_path / "var/hook.json").read_text())
        assert endpoint["url"] == f"http://127.0.0.1:{hook_port}/hook", endpoint
        assert endpoint["secret"].startswith("whsec_"), endpoint
        hooks = subprocess.Popen(["bash", "-c", local(receiver)], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)

        tour = _blocks("## A tour of the API", "## Bulk jobs")
        bulk = _blocks("## Bulk jobs", "## Webhooks")
        operator = _blocks("## Models, keys, operators", "## The dashboard")
        assert len(tour) == 5 and len(bulk) == 2 and len(operator) == 1
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + local(
            "\n".join(tour + bulk + operator))], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=180)
        assert done.returncode == 0, done.stderr + done.stdout
        objects = _json_objects(done.stdout)  # curl prints no newline between bodies
        assert len(objects) == 6, done.stdout
        assert [j["status"] for j in objects[:2]] == ["queued", "queued"]
        job, result, answer = objects[2], objects[3], objects[4]
        assert job["status"] == "succeeded" and job["model"] == "diabetes"
        assert isinstance(result["predictions"][0], float) and result["version"] == "1"
        assert answer["predictions"] == ["setosa"] and answer["model"] == "iris"
        assert objects[5]["model"] == "churn" and objects[5]["predictions"][0] in ("churn", "stay")
        # The million-row job: cancelled while it ran, or finished first; never anything else.
        assert re.search(r"\}(200\ncancelled|409\nsucceeded)\n", done.stdout), done.stdout
        assert re.search(r"registered flowers 2024-06 \(classifier, 4 features\)", done.stdout)
        assert "flowers\t2024-06" in done.stdout and "revoked 1 key(s)" in done.stdout
        # The bulk examples: the CLI's file, then curl's CSV, each with its header first.
        assert done.stdout.count("prediction,p_setosa,p_versicolor,p_virginica\n") == 2
        assert " succeeded" in done.stderr  # predq submit --wait

        # The receiver verified and printed the diabetes job's event (and the others').
        seen: list[str] = []
        threading.Thread(target=lambda: seen.extend(line.strip() for line in hooks.stdout),
                         daemon=True).start()
        deadline = time.monotonic() + 30
        while f"job.succeeded {job['id']}" not in seen:
            assert time.monotonic() < deadline and hooks.poll() is None, seen
            time.sleep(0.2)
    finally:
        if hooks is not None:
            os.killpg(hooks.pid, signal.SIGKILL)
            hooks.wait(10)
        descendants = psutil.Process(up.pid).children(recursive=True)
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
        psutil.wait_procs(descendants, timeout=30)
        log.close()


def _json_objects(text: str) -> list[dict[str, object]]:
    """The JSON objects at the start of `text`, back to back, before any other output."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text) or text[i] != "{":
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


def test_the_docs_links_resolve_and_their_shell_examples_are_the_readmes() -> None:
    """docs/ is linked from README and links back; a shell example there is one README runs."""
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages
    for page in [ROOT / "README.md", *pages]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
        if page.name != "README.md":
            for block in re.findall(r"```sh\n(.*?)```", text, re.S):
                assert block in README, f"{page.name} has a shell example README does not run"
    linked = set(re.findall(r"\(docs/([a-z]+\.md)", README))
    assert linked == {p.name for p in pages}, "every docs/ page is linked from README"
