"""Add CHECK constraints for statuses and values, NOT VALID.

Why: the plan's schema lets raw-SQL writers (n8n workflows) store any status string and
negative sizes, durations, token counts and times. These constraints make the database refuse
them, whoever writes:
  analysis_results.status in (pending, processing, completed, failed);
  processing_jobs.status in (queued, running, completed, failed, cancelled);
  media_items.file_size, duration_seconds >= 0 and width, height > 0;
  analysis_results.token_usage, processing_time_ms >= 0.
Also `<table>_status_not_null_check` (status IS NOT NULL), a helper for revision 0005, which
makes status NOT NULL without a full-table scan under an ACCESS EXCLUSIVE lock. (Not named
`<table>_status_not_null`: PostgreSQL 18 gives that name to the NOT NULL constraint itself.)

Locks: ADD CONSTRAINT ... NOT VALID takes ACCESS EXCLUSIVE only for a catalog update, with no
scan; new writes are checked from then on. Existing rows are fixed (0003) and checked (0004,
VALIDATE, which lets reads and writes continue) by later revisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANALYSIS_STATUSES = "'pending', 'processing', 'completed', 'failed'"
JOB_STATUSES = "'queued', 'running', 'completed', 'failed', 'cancelled'"
CHECKS: dict[str, dict[str, str]] = {
    "media_items": {
        "media_items_file_size_check": "file_size >= 0",
        "media_items_duration_seconds_check": "duration_seconds >= 0",
        "media_items_width_check": "width > 0",
        "media_items_height_check": "height > 0",
    },
    "analysis_results": {
        "analysis_results_status_check": f"status IN ({ANALYSIS_STATUSES})",
        "analysis_results_token_usage_check": "token_usage >= 0",
        "analysis_results_processing_time_ms_check": "processing_time_ms >= 0",
        "analysis_results_status_not_null_check": "status IS NOT NULL",
    },
    "processing_jobs": {
        "processing_jobs_status_check": f"status IN ({JOB_STATUSES})",
        "processing_jobs_status_not_null_check": "status IS NOT NULL",
    },
}


LOCK_ALL = "LOCK TABLE processing_jobs, analysis_results, media_items IN ACCESS EXCLUSIVE MODE"


def upgrade() -> None:
    # Take every table's lock first, children before media_items: writers lock a child, then
    # media_items (the foreign key check). Locking in their order cannot deadlock with them.
    op.execute(LOCK_ALL)
    for table, checks in CHECKS.items():
        for name, condition in checks.items():
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")


def downgrade() -> None:
    op.execute(LOCK_ALL)  # as in upgrade()
    for table, checks in reversed(CHECKS.items()):
        for name in reversed(checks):
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
