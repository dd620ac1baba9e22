"""Make analysis_results.status and processing_jobs.status NOT NULL.

Why: a status of NULL is in no state at all: the queue never claims such a job and nothing
reports it. Every writer now gets the default or must name a real status.

Locks: SET NOT NULL needs ACCESS EXCLUSIVE, and normally scans the whole table under it. The
validated CHECK (status IS NOT NULL) from 0002/0004 proves the column holds no NULL, so
PostgreSQL (12+) skips the scan: the lock is held for a catalog update only. The helper
constraint is then redundant and dropped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("processing_jobs", "analysis_results")


def upgrade() -> None:
    # Both locks first, in one order (jobs, then results), so no writer can hold one while
    # waiting for the other.
    op.execute("LOCK TABLE processing_jobs, analysis_results IN ACCESS EXCLUSIVE MODE")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN status SET NOT NULL")
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_status_not_null_check")


def downgrade() -> None:
    # Back to 0004's state: the helper constraint, validated, and a nullable column. It is
    # added NOT VALID, then validated in a transaction of its own, so the scan runs under
    # SHARE UPDATE EXCLUSIVE (writes continue), not under the ACCESS EXCLUSIVE lock of the ADD.
    op.execute("LOCK TABLE processing_jobs, analysis_results IN ACCESS EXCLUSIVE MODE")
    for table in TABLES:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_status_not_null_check "
            "CHECK (status IS NOT NULL) NOT VALID"
        )
    with op.get_context().autocommit_block():
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {table}_status_not_null_check")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN status DROP NOT NULL")
