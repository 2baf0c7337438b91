"""Hardening: artifact versions and formats, key scopes and expiry, per-tenant limits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("numpy_version", sa.String(30), nullable=True))
        batch.add_column(sa.Column("artifact_format", sa.String(10), nullable=False,
                                   server_default="joblib"))
        batch.add_column(sa.Column("trusted_types", sa.JSON, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        # Keys made before scopes existed keep what they could do: everything.
        batch.add_column(sa.Column("scopes", sa.String(100), nullable=False,
                                   server_default="submit,read,admin"))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
    op.create_table(
        "tenant_limits",
        sa.Column("tenant", sa.String(100), primary_key=True),
        sa.Column("requests_per_second", sa.Float, nullable=True),
        sa.Column("rows_per_minute", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_limits")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("name")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("trusted_types")
        batch.drop_column("artifact_format")
        batch.drop_column("numpy_version")
