"""docker-compose.yml describes the production shape, and every command in it is a real one.

(`docker compose config` is not available on the CI machine; this parses the file instead.)
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
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
    command = _command(service)
    if command[:2] == ["sh", "-c"]:
        steps = [shlex.split(step) for step in command[2].split("&&")]
    else:
        steps = [command]
    for step in steps:
        assert step[0] == "predq", step
        result = CliRunner().invoke(main, [*step[1:], "--help"])
        assert result.exit_code == 0, (step, result.output)
