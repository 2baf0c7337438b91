"""Bulk jobs: inputs and results in chunks, progress, retention, scheduled runs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("n_chunks", sa.Integer, nullable=True))
        batch.add_column(sa.Column("rows_done", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("keep_inputs", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("retention", sa.Integer, nullable=True))
    op.create_table(
        "job_chunks",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("inputs", sa.LargeBinary, nullable=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_chunks_status", "job_chunks", ["status", "published_at"])
    with op.batch_alter_table("tenant_limits") as batch:
        batch.add_column(sa.Column("retention", sa.Integer, nullable=True))
    op.create_index("ix_jobs_status_finished", "jobs", ["status", "finished_at"])
    op.create_table(
        "schedule_runs",
        sa.Column("schedule", sa.String(100), primary_key=True),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_index("ix_jobs_status_finished", "jobs")
    with op.batch_alter_table("tenant_limits") as batch:
        batch.drop_column("retention")
    op.drop_index("ix_job_chunks_status", "job_chunks")
    op.drop_table("job_chunks")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retention")
        batch.drop_column("keep_inputs")
        batch.drop_column("rows_done")
        batch.drop_column("n_chunks")
