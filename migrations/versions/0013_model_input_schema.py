"""A model version's typed input schema and the optional model libraries it was registered
under. Versions registered before keep NULL: they take numbers, as they always did.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("input_schema", sa.Text(), nullable=True))
        batch.add_column(sa.Column("libraries", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("libraries")
        batch.drop_column("input_schema")
