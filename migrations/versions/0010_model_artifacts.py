"""Artifact bytes in the store by sha256, so a worker host without the model files fetches them.

Models registered before keep working where their file is readable: the upgrade copies every
readable artifact in (one that is not, say a file on another host, is skipped with a warning;
register it again, or run the upgrade where the model store is mounted).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import hashlib
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    artifacts = op.create_table(
        "model_artifacts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    conn = op.get_bind()
    seen: set[str] = set()
    for sha256, path in conn.execute(sa.text("SELECT sha256, artifact_path FROM models")):
        if sha256 in seen:
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            log.warning("artifact %s not copied into the store: %s", path, exc)
            continue
        if hashlib.sha256(data).hexdigest() != sha256:
            log.warning("artifact %s not copied into the store: its sha256 changed", path)
            continue
        seen.add(sha256)
        conn.execute(sa.insert(artifacts).values(sha256=sha256, size=len(data), data=data,
                                                 created_at=datetime.now(UTC)))


def downgrade() -> None:
    op.drop_table("model_artifacts")
