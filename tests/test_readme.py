"""Every shell example in README.md runs as printed against a real `predq up`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.support.processes import ROOT, free_port

README = (ROOT / "README.md").read_text()


def _blocks(after: str, until: str) -> list[str]:
    section = README.split(after, 1)[1].split(until, 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_readme_api_and_operator_examples_work_as_printed(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PREDQ_VAR_DIR=str(tmp_path / "var"), PREDQ_MODEL_DIR=str(tmp_path / "var/models"),
               PREDQ_PORT=str(port), PYTHONPATH=str(ROOT))
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    log = open(tmp_path / "up.log", "w+")  # noqa: SIM115
    up = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], env=env, cwd=tmp_path,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Try it:" not in (tmp_path / "up.log").read_text():
            assert time.monotonic() < deadline and up.poll() is None, \
                (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.2)
        api = _blocks("## The API", "### Errors")
        hooks = _blocks("## Webhooks", "## Models, keys, operators")
        operator = _blocks("## Models, keys, operators", "### Production")
        bulk = _blocks("## Bulk jobs", "## Webhooks")
        assert len(api) == 5 and len(hooks) == 1 and len(operator) == 1 and len(bulk) == 2
        script = "set -euo pipefail\n" + "\n".join(api + hooks + operator + bulk)
        script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        objects = _json_objects(done.stdout)  # curl prints no newline between bodies
        assert len(objects) == 5, done.stdout
        after_cancel = re.split(r"\}(?:200|409)\n", done.stdout, maxsplit=1)[1]
        endpoint = _json_objects(after_cancel)[0]
        assert endpoint.get("url") == "https://example.com/predq-hook", endpoint
        assert endpoint["secret"].startswith("whsec_"), endpoint
        assert [j["status"] for j in objects[:2]] == ["queued", "queued"]
        job, result, answer = objects[2], objects[3], objects[4]
        assert job["status"] == "succeeded" and job["model"] == "diabetes"
        assert isinstance(result["predictions"][0], float) and result["version"] == "1"
        assert answer["predictions"] == ["setosa"] and answer["model"] == "iris"
        assert re.search(r"\}(200|409)\n", done.stdout), done.stdout  # the cancel's status
        assert re.search(r"registered flowers 2024-06 \(classifier, 4 features\)", done.stdout)
        assert "flowers\t2024-06" in done.stdout and "revoked 1 key(s)" in done.stdout
        # The bulk examples: the CLI's file, then curl's CSV, each with its header first.
        assert done.stdout.count("prediction,p_setosa,p_versicolor,p_virginica\n") == 2
        assert " succeeded" in done.stderr  # predq submit --wait
    finally:
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
