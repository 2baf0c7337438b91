"""docker-compose.yml describes the production shape, and every command in it is a real one;
docs/production.md's autoscaling rules are valid and read metrics predq serves."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from service.cli.main import main
from tests.support.processes import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PREDQ = ("migrate", "api", "worker", "deliverer", "beat")


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_the_services_of_the_production_shape_are_all_there() -> None:
    services = COMPOSE["services"]
    assert set(services) >= {"redis", "postgres", *PREDQ}
    redis = _command(services["redis"])
    assert redis[:3] == ["redis-server", "--appendonly", "yes"]
    assert "--maxmemory-policy" in redis and "noeviction" in redis
    for name in ("redis", "postgres", "api", "worker", "deliverer"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("worker", "deliverer"):  # a real predq command
        test = services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "predq"]
        assert CliRunner().invoke(main, [*test[2:], "--help"]).exit_code == 0
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "deliverer", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"


@pytest.mark.parametrize("name", PREDQ)
def test_each_predq_service_has_the_environment_and_a_real_command(name: str) -> None:
    service = COMPOSE["services"][name]
    env = service["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["REDIS_URL"].startswith("redis://")
    assert "PREDQ_SECRET_KEY" in env and "PREDQ_WEBHOOK_ALLOW_HOSTS" in env
    assert "/data/models" in " ".join(service["volumes"])
    # Jobs by reference: the API and every worker see the data root at the same path.
    assert f"shared:{env['PREDQ_DATA_ROOT']}" in service["volumes"]
    command = _command(service)
    if command[:2] == ["sh", "-c"]:
        steps = [shlex.split(step) for step in command[2].split("&&")]
    else:
        steps = [command]
    for step in steps:
        assert step[0] == "predq", step
        result = CliRunner().invoke(main, [*step[1:], "--help"])
        assert result.exit_code == 0, (step, result.output)


def test_docker_compose_validates_the_file() -> None:
    """Debian's docker-compose checks the file without a Docker daemon (.ci/run installs it)."""
    if shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose: apt-get install docker-compose (.ci/run does)")
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config",
                           "-q"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PREDQ_SECRET_KEY": "x"})
    assert done.returncode == 0, done.stderr


def test_the_autoscaling_examples_parse_and_read_metrics_predq_serves(api_url: str) -> None:
    text = (ROOT / "docs" / "production.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    kinds = {b["kind"]: b for b in blocks}
    assert set(kinds) == {"ScaledObject", "HorizontalPodAutoscaler"}
    scraped = requests.get(f"{api_url}/metrics", timeout=30).text
    served = {line.split()[2] for line in scraped.splitlines() if line.startswith("# TYPE")}
    keda = kinds["ScaledObject"]
    assert keda["apiVersion"] == "keda.sh/v1alpha1" and keda["spec"]["scaleTargetRef"]["name"]
    for trigger in keda["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        assert float(trigger["metadata"]["threshold"]) > 0
        named = set(re.findall(r"predq_[a-z_]+", trigger["metadata"]["query"]))
        assert named and named <= served, named
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    for metric in hpa["spec"]["metrics"]:
        assert metric["external"]["metric"]["name"] in served
