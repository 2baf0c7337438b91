from dataclasses import fields
from pathlib import Path

import pytest

from service.core.settings import Settings
from tests.support.processes import ROOT


def test_settings_read_typed_values_from_environment_variables() -> None:
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql+psycopg://db/predq",
        "REDIS_URL": "redis://cache:6379/2",
        "PREDQ_BATCH_FLUSH_EVERY": "32",
        "PREDQ_BATCH_FLUSH_INTERVAL": "0.02",
    })
    assert settings.database_url == "postgresql+psycopg://db/predq"
    assert settings.broker_url == "redis://cache:6379/2"
    assert settings.batch_flush_every == 32
    assert settings.batch_flush_interval == 0.02


def test_unix_socket_redis_url_is_spelled_for_kombu() -> None:
    settings = Settings.from_env({"REDIS_URL": "unix:///tmp/r.sock"})
    assert settings.broker_url == "redis+socket:///tmp/r.sock"


def test_time_limit_not_below_visibility_timeout_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="visibility_timeout"):
        Settings.from_env({"PREDQ_VISIBILITY_TIMEOUT": "60", "PREDQ_TASK_TIME_LIMIT": "60"})


def test_env_round_trips_through_child_process_variables() -> None:
    settings = Settings.from_env({}, max_rows_per_job=7)
    assert Settings.from_env(settings.env()) == settings


def test_a_lease_too_short_to_renew_is_refused() -> None:
    with pytest.raises(ValueError, match="lease_seconds must be at least 3"):
        Settings.from_env({"PREDQ_LEASE_SECONDS": "2"})
    # Renewed while its batch runs, a lease may be shorter than the longest batch.
    assert Settings.from_env({"PREDQ_LEASE_SECONDS": "5", "PREDQ_TASK_TIME_LIMIT": "60"})


def test_every_setting_is_documented_under_its_variable_name() -> None:
    documented = (ROOT / "docs" / "settings.md").read_text()
    missing = [f.metadata.get("env", f"PREDQ_{f.name.upper()}") for f in fields(Settings)
               if f"`{f.metadata.get('env', f'PREDQ_{f.name.upper()}')}`" not in documented]
    assert missing == []


def test_a_model_store_inside_the_data_root_is_refused_at_start(tmp_path: Path) -> None:
    """A tenant's output could otherwise make a directory named like an artifact."""
    with pytest.raises(ValueError, match="model_dir .* is inside data_root"):
        Settings.from_env({}, data_root=str(tmp_path), model_dir=str(tmp_path / "models"))
    with pytest.raises(ValueError, match="is inside data_root"):
        Settings.from_env({}, data_root=str(tmp_path), model_dir=str(tmp_path))
    assert Settings.from_env({}, data_root=str(tmp_path / "data"),
                             model_dir=str(tmp_path / "models"))


@pytest.mark.parametrize("entry", ["acme", "acme=/etc", "acme=a/../b", "=public", "acme="])
def test_a_shared_prefix_that_is_no_relative_path_under_the_root_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="data_shared"):
        Settings.from_env({"PREDQ_DATA_SHARED": entry})


def test_shared_prefixes_are_read_as_tenant_and_prefix_pairs() -> None:
    settings = Settings.from_env({"PREDQ_DATA_SHARED": "acme=reference/iris/, *=public"})
    assert settings.shared_prefixes() == [("acme", "reference/iris"), ("*", "public")]
