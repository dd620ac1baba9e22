"""Index the job queue's claim and processing_jobs.media_item_id, built CONCURRENTLY.

Why: the worker's claim (status = 'queued' ORDER BY priority DESC, created_at) had no index
that serves it: with 1M jobs, 200k queued, every claim scanned ~12k buffers (34 ms). A partial
index on (priority DESC, created_at) WHERE status = 'queued' holds only the queued jobs, in
claim order (0.03 ms). processing_jobs.media_item_id had no index, so deleting a media item
(ON DELETE CASCADE) scanned every job.
idx_processing_jobs_status stays: it still serves the other statuses (by_status, counts of the
small ones); see the closing note of the hardening issue for the measurement.

Locks: CREATE INDEX CONCURRENTLY takes SHARE UPDATE EXCLUSIVE: reads and writes (n8n's
included) continue during the build. It cannot run inside a transaction, hence the autocommit
block: this revision is not atomic. A failed concurrent build leaves an INVALID index that
still holds the name and that `IF NOT EXISTS` would silently keep; so an invalid leftover is
dropped and built again, and a valid one kept, which makes a re-run after a failure safe.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "idx_processing_jobs_claim": (
        "ON processing_jobs (priority DESC, created_at) WHERE status = 'queued'"
    ),
    "idx_processing_jobs_media_item_id": "ON processing_jobs (media_item_id)",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            if _leftover_is_invalid(name):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")


def _leftover_is_invalid(name: str) -> bool:
    if context.is_offline_mode():
        return True  # cannot look: drop whatever a failed earlier run left (if anything)
    valid = op.get_bind().scalar(
        sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name AND c.relnamespace = CAST(current_schema() AS regnamespace)"
        ),
        {"name": name},
    )
    return valid is False


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in reversed(INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
