"""Bulk chunks' rows and results stored out of line without PostgreSQL's compression.

A chunk's `inputs` are raw float64 rows (1.6 MB for 10,000 rows of 20 features) and its
`result` .npy arrays, already compressed where that pays (`service.jobs.payloads`). PostgreSQL
tried to compress both again (pglz, TOAST's default) and kept the result only when it saved a
quarter: for float rows it never does, so every chunk paid a full compression pass on INSERT
for nothing. Measured on a 1M-row `.npy` upload: the PostgreSQL backends took 3.6 s of CPU in
a 4 s window, more than the API and the worker together. `STORAGE EXTERNAL` keeps them out of
line, uncompressed. PostgreSQL only (SQLite has no such setting); applies to values written
from now on.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE job_chunks ALTER COLUMN inputs SET STORAGE EXTERNAL, "
                   "ALTER COLUMN result SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE job_chunks ALTER COLUMN inputs SET STORAGE EXTENDED, "
                   "ALTER COLUMN result SET STORAGE EXTENDED")
