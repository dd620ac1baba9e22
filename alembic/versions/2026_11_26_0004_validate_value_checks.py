"""Validate the CHECK constraints added NOT VALID by revision 0002.

Why: until validated, PostgreSQL checks only new writes; validation proves existing rows obey
too, and a validated `status IS NOT NULL` lets revision 0005 set NOT NULL without a scan.
If a row breaks a rule, this fails naming the constraint, and nothing changes: fix the rows
(the constraint name says which rule) and run the upgrade again.

Locks: VALIDATE CONSTRAINT scans under SHARE UPDATE EXCLUSIVE, which lets reads and writes
(n8n's included) continue; only other schema changes wait.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A copy of 0002's constraints (revisions never import each other: history stays as written).
ANALYSIS_STATUSES = "'pending', 'processing', 'completed', 'failed'"
JOB_STATUSES = "'queued', 'running', 'completed', 'failed', 'cancelled'"
CONSTRAINTS: dict[str, dict[str, str]] = {
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


def upgrade() -> None:
    for table, checks in CONSTRAINTS.items():
        for name in checks:
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    # No "un-validate" exists: put each back as 0002 left it (NOT VALID: a catalog change, no
    # scan), so the schema is exactly the previous revision's.
    # Take every table's lock first, children before media_items: writers lock a child, then
    # media_items (the foreign key check). Locking in their order cannot deadlock with them.
    op.execute("LOCK TABLE processing_jobs, analysis_results, media_items IN ACCESS EXCLUSIVE MODE")
    for table, checks in CONSTRAINTS.items():
        for name, condition in checks.items():
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
