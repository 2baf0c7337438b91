"""Alembic migrations of the result store. `predq db upgrade` runs them to head."""
