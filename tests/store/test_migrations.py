"""The migrations and the tables agree: a database migrated to head has exactly the schema
`service/store/db.py` declares, on SQLite and on PostgreSQL (TEST_DATABASE_URL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine

from service.store.db import metadata


def test_a_database_migrated_to_head_matches_the_declared_tables(engine: Engine) -> None:
    # The session's database, migrated to head by its fixture, read by a plain engine:
    # predq's asks PostgreSQL for binary results, which the catalog's reflection cannot read.
    plain = create_engine(engine.url)
    try:
        with plain.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            differences = compare_metadata(context, metadata)
    finally:
        plain.dispose()
    assert differences == []
