"""What the operator's job page shows: which worker claimed a job (or each chunk of a bulk
job), the format a bulk upload arrived in, and the job a retry was made from.

`jobs.worker` and `job_chunks.worker` are written by the claims (the name of the worker's main
process, host:pid, as its heartbeat names it); `jobs.input_format` by a bulk upload (a JSON
job's is NULL, a job by reference names its format in `input_ref`); `jobs.retry_of` by
`POST /v1/jobs/{id}/retry`. Every column is nullable: the previous release ignores them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker", sa.String(100), nullable=True))
        batch.add_column(sa.Column("input_format", sa.String(20), nullable=True))
        batch.add_column(sa.Column("retry_of", sa.String(36), nullable=True))
    with op.batch_alter_table("job_chunks") as batch:
        batch.add_column(sa.Column("worker", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_chunks") as batch:
        batch.drop_column("worker")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retry_of")
        batch.drop_column("input_format")
        batch.drop_column("worker")
