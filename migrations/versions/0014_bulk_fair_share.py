"""Bulk scheduling: a tenant's weight, its share of the bulk processes when several tenants'
bulk jobs run (service/jobs/dispatch.py; NULL: 1, as every tenant before); and each model
version's measured cost per row, which sizes its chunks (service/jobs/chunksize.py).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant_limits") as batch:
        batch.add_column(sa.Column("weight", sa.Float(), nullable=True))
    op.create_table(
        "model_costs",
        sa.Column("model_id", sa.Integer(), primary_key=True),
        sa.Column("seconds_per_row", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_costs")
    with op.batch_alter_table("tenant_limits") as batch:
        batch.drop_column("weight")
