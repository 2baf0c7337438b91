"""Model rollouts: a model's weighted split of versions and its shadow, every change made to
it, and the shadow results stored beside the jobs they shadow.

`model_rollouts` holds one row per model name with a rollout (none: jobs get the latest
registered version); `rollout_changes` records who changed it, when, from what to what;
`jobs.shadow_model_id` names the version a job also runs on as a shadow (NULL: none), and
`shadow_results` holds what that version answered (`shadow_chunk_results`, a bulk job's, chunk
by chunk; `ix_jobs_shadowed`: the reconciler finds
shadows whose message was lost). Every new column is nullable and every
table new: the previous release ignores them.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_rollouts",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("weights", sa.JSON, nullable=False),
        sa.Column("shadow_version", sa.String(50), nullable=True),
        sa.Column("shadow_percent", sa.Float, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "rollout_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
    )
    op.create_index("ix_rollout_changes_name", "rollout_changes", ["name", "id"])
    op.create_table(
        "shadow_results",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shadow_results_model", "shadow_results", ["model_id", "created_at"])
    op.create_table(
        "shadow_chunk_results",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_shadow_chunk_results_model", "shadow_chunk_results",
                    ["model_id", "created_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("shadow_model_id", sa.Integer, nullable=True))
    op.create_index("ix_jobs_shadowed", "jobs", ["finished_at"],
                    postgresql_where=sa.text("shadow_model_id IS NOT NULL"),
                    sqlite_where=sa.text("shadow_model_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_jobs_shadowed", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("shadow_model_id")
    op.drop_index("ix_shadow_chunk_results_model", "shadow_chunk_results")
    op.drop_table("shadow_chunk_results")
    op.drop_index("ix_shadow_results_model", "shadow_results")
    op.drop_table("shadow_results")
    op.drop_index("ix_rollout_changes_name", "rollout_changes")
    op.drop_table("rollout_changes")
    op.drop_table("model_rollouts")
