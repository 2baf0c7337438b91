"""The real-time path: deadlines, results served from cache, per-model cache TTL, and an index
for queue depth per queue and tenant.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("from_cache", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_index("ix_jobs_status_queue_tenant", "jobs",
                    ["status", "queue", "tenant", "created_at"])
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("cache_ttl", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("cache_ttl")
    op.drop_index("ix_jobs_status_queue_tenant", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("from_cache")
        batch.drop_column("deadline")
