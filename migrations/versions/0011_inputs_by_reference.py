"""Bulk jobs whose input is a file under the data root, read by the workers, not uploaded;
and uploads whose chunks are predicted while they arrive (`jobs.uploading`).

`jobs.input_ref` names the file (JSON: path relative to the root and format), `output_ref` the
result file written when the job completes, `chunks_done` counts committed chunks (a CSV's rows
are only known as its chunks are read); a chunk's `start`/`stop` are its rows (.npy, Parquet)
or bytes (CSV) in that file. Every column is nullable or defaulted: the previous release
ignores them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("input_ref", sa.Text, nullable=True))
        batch.add_column(sa.Column("output_ref", sa.Text, nullable=True))
        batch.add_column(sa.Column("chunks_done", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("uploading", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("job_chunks") as batch:
        batch.add_column(sa.Column("start", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("stop", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_chunks") as batch:
        batch.drop_column("stop")
        batch.drop_column("start")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("uploading")
        batch.drop_column("chunks_done")
        batch.drop_column("output_ref")
        batch.drop_column("input_ref")
