"""Run the Alembic migrations programmatically (no alembic.ini needed).

It lives beside the scripts it runs, above the store they use (`env.py` imports the tables):
the command line and the tests call it; nothing in service/ below the CLI does, so no import
runs back up (the contracts in pyproject.toml hold it).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema of `database_url` to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
