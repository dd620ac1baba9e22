"""Make analysis_results.status and processing_jobs.status NOT NULL.

Why: a status of NULL is in no state at all: the queue never claims such a job and nothing
reports it. Every writer now gets the default or must name a real status.

Locks: SET NOT NULL needs ACCESS EXCLUSIVE, and normally scans the whole table under it. The
validated CHECK (status IS NOT NULL) from 0002/0004 proves the column holds no NULL, so
PostgreSQL (12+) skips the scan: the lock is held for a catalog update only. The helper
constraint is then redundant and dropped.

Downgrade: not atomic. It adds the helper constraint NOT VALID (ACCESS EXCLUSIVE, catalog only)
and commits, validates it in autocommit (SHARE UPDATE EXCLUSIVE: writes continue during the
scan), then drops NOT NULL in a last transaction. It can stop after the first commit (a lock
timeout in VALIDATE or in the last step, a crash): the helper constraints stay, NOT VALID or
valid, and the database stays at 0005. Each run therefore starts by dropping whatever helper
constraint an earlier run left (DROP CONSTRAINT IF EXISTS, under the same lock) and adds it
afresh, so a re-run goes through from any point it stopped at and ends catalog-identical to 0004.

Mended in place (2026-11, issue 13): the first version added the constraints unconditionally, so
after a lock timeout in VALIDATE every later run failed with DuplicateObject and the database
could not go below 0005. No later revision can change how 0005 goes down, hence the one edit of
a landed revision; the upgrade and the end state of the downgrade are unchanged.

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
        # Left by an earlier run that stopped after the commit below: start afresh.
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_status_not_null_check")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_status_not_null_check "
            "CHECK (status IS NOT NULL) NOT VALID"
        )
    with op.get_context().autocommit_block():
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {table}_status_not_null_check")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN status DROP NOT NULL")
