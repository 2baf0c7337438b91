"""Indexes for the retention sweep: jobs with a retention of their own, chunks holding inputs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    own = sa.text("retention IS NOT NULL")
    op.create_index("ix_jobs_own_retention", "jobs", ["finished_at"], postgresql_where=own,
                    sqlite_where=own)
    holding = sa.text("inputs IS NOT NULL")
    op.create_index("ix_job_chunks_holding_inputs", "job_chunks", ["job_id"],
                    postgresql_where=holding, sqlite_where=holding)


def downgrade() -> None:
    op.drop_index("ix_job_chunks_holding_inputs", "job_chunks")
    op.drop_index("ix_jobs_own_retention", "jobs")
