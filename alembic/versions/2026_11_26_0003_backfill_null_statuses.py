"""Backfill NULL statuses with the column defaults, in small batches.

Why: status had a default but no NOT NULL, so a raw-SQL writer could store an explicit NULL.
Revision 0004 validates `status IS NOT NULL` (then 0005 makes the column NOT NULL); any NULL
left would make it fail. NULL becomes what the default would have given: 'pending' for
analysis results, 'queued' for jobs.

Locks: batches of 5,000 rows, each committed on its own (autocommit block), so no row lock is
held for long and n8n's writes interleave. Safe to re-run (it only touches NULLs); nothing to
undo on downgrade (the NULLs are not restored: they carried no information). Offline SQL gets a
single UPDATE per table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000
STATUS_DEFAULTS = {"analysis_results": "pending", "processing_jobs": "queued"}


def upgrade() -> None:
    for table, default in STATUS_DEFAULTS.items():
        if context.is_offline_mode():
            op.execute(f"UPDATE {table} SET status = '{default}' WHERE status IS NULL")
            continue
        batch = sa.text(
            f"UPDATE {table} SET status = '{default}' WHERE id IN "
            f"(SELECT id FROM {table} WHERE status IS NULL LIMIT {BATCH})"
        )
        with op.get_context().autocommit_block():
            while op.get_bind().execute(batch).rowcount:
                pass


def downgrade() -> None:
    pass  # nothing to undo: see the docstring
