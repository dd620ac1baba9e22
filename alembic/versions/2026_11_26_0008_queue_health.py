"""queue health: priority not null and checked, autovacuum sooner

Why: raw-SQL writers (n8n) could store a NULL priority, which the claim's `priority DESC` sorts
first, ahead of every real priority, and a negative one, which the application refuses. Now
priority is NOT NULL and >= 0, whoever writes. Existing NULLs become 5, the column default (what
the writer would have got by leaving it out), in batches of 5,000 rows committed one by one (added
by hand to what `make revision` wrote; safe to re-run: it only touches NULLs). A negative
priority is not guessed at: VALIDATE fails naming processing_jobs_priority_check; fix those rows
and run the upgrade again. processing_jobs also gets per-table autovacuum settings: each claim
leaves a dead entry in the claim index until VACUUM, and the default scale factor (20 %) let
200k pile up on 1M jobs; 1 % + 1,000 started autovacuum within 20k claims and halved the claim's
buffers (bench/queue_health.py, PostgreSQL 18 with autovacuum on). The downgrade drops the
constraints and resets the settings; the backfilled priorities stay (they are valid values).
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - alter_column processing_jobs.priority SET NOT NULL: a CHECK (priority IS NOT NULL) is added NOT
    VALID, then VALIDATE scans under SHARE UPDATE EXCLUSIVE, reads and writes continue; SET NOT
    NULL then needs no scan, and the CHECK is dropped; each catalog step takes ACCESS EXCLUSIVE
    briefly.
  - check constraint processing_jobs_priority_check on processing_jobs: ADD ... NOT VALID takes
    ACCESS EXCLUSIVE, briefly: a catalog update, no scan or rewrite; then VALIDATE scans under
    SHARE UPDATE EXCLUSIVE, reads and writes continue.
  - storage parameters autovacuum_analyze_scale_factor, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold of processing_jobs: SHARE UPDATE EXCLUSIVE, reads and writes
    continue.
  downgrade:
  - storage parameters autovacuum_analyze_scale_factor, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold of processing_jobs: SHARE UPDATE EXCLUSIVE, reads and writes
    continue.
  - drop_constraint processing_jobs_priority_check on processing_jobs: ACCESS EXCLUSIVE, briefly: a
    catalog update, no scan or rewrite.
  - alter_column processing_jobs.priority DROP NOT NULL: ACCESS EXCLUSIVE, briefly: a catalog
    update, no scan or rewrite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 07:59:01.471697+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_BATCH = 5_000
# `make lint-sql` findings made on purpose: direction -> rule -> why.
lint_waivers = {
    "upgrade": {
        "adding-not-nullable-field": "SET NOT NULL proven by a validated CHECK: no scan",
        "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
    },
    "downgrade": {
        "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
        "ban-drop-not-null": "undoes a SET NOT NULL",
    },
}


def upgrade() -> None:
    backfill_null_priorities()
    # Drop a leftover of a failed earlier run, so that running the revision again finishes it.
    op.drop_constraint(
        op.f("processing_jobs_priority_not_null_check"),
        "processing_jobs",
        type_="check",
        if_exists=True,
    )
    op.create_check_constraint(
        op.f("processing_jobs_priority_not_null_check"),
        "processing_jobs",
        "priority IS NOT NULL",
        postgresql_not_valid=True,
    )
    # VALIDATE in a transaction of its own: it scans without blocking writes.
    with op.get_context().autocommit_block():
        op.execute(
            "ALTER TABLE processing_jobs VALIDATE CONSTRAINT "
            "processing_jobs_priority_not_null_check"
        )

    op.alter_column(
        "processing_jobs",
        "priority",
        existing_type=sa.INTEGER(),
        nullable=False,
        existing_server_default=sa.text("5"),
    )
    op.drop_constraint(
        op.f("processing_jobs_priority_not_null_check"), "processing_jobs", type_="check"
    )
    # Drop a leftover of a failed earlier run, so that running the revision again finishes it.
    op.drop_constraint(
        op.f("processing_jobs_priority_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.create_check_constraint(
        op.f("processing_jobs_priority_check"),
        "processing_jobs",
        "priority >= 0",
        postgresql_not_valid=True,
    )
    # VALIDATE in a transaction of its own: it scans without blocking writes.
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE processing_jobs VALIDATE CONSTRAINT processing_jobs_priority_check")

    op.execute(
        "ALTER TABLE processing_jobs SET "
        "(autovacuum_analyze_scale_factor = 0.02, "
        "autovacuum_vacuum_scale_factor = 0.01, "
        "autovacuum_vacuum_threshold = 1000)"
    )


def backfill_null_priorities() -> None:
    """NULL priority -> 5 (the default), in committed batches so no row lock is held long."""
    if context.is_offline_mode():
        op.execute("UPDATE processing_jobs SET priority = 5 WHERE priority IS NULL")
        return
    batch = sa.text(
        "UPDATE processing_jobs SET priority = 5 WHERE id IN (SELECT id FROM processing_jobs "
        f"WHERE priority IS NULL LIMIT {BACKFILL_BATCH})"
    )
    with op.get_context().autocommit_block():
        while op.get_bind().execute(batch).rowcount:
            pass


def downgrade() -> None:
    op.execute(
        "ALTER TABLE processing_jobs RESET "
        "(autovacuum_analyze_scale_factor, "
        "autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)"
    )
    op.drop_constraint(op.f("processing_jobs_priority_check"), "processing_jobs", type_="check")
    op.alter_column(
        "processing_jobs",
        "priority",
        existing_type=sa.INTEGER(),
        nullable=True,
        existing_server_default=sa.text("5"),
    )
