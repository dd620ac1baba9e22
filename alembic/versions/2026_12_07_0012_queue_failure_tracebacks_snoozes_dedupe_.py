"""queue: failure tracebacks, snoozes, dedupe keys

Why: (issue 36) a failed handler left only `Type: message`, a provider's 429 spent an attempt
(a ten-minute throttle dead-lettered its jobs), and n8n's retried webhook enqueued the same
analysis twice, both run and paid. Four columns on processing_jobs:
- `error_traceback`: the last failed attempt's traceback, its last 8 KB (NULL: none failed);
- `snoozes` / `max_snoozes` (default 100): a handler raising RetryAfter puts its job back
  without spending the attempt, counted here; past max_snoozes a snooze is a failed attempt;
- `dedupe_key`: one live (queued or running) job per key, held by the partial unique index
  `idx_processing_jobs_dedupe_key`, so `INSERT ... ON CONFLICT DO NOTHING` of a live key writes
  nothing (n8n's form, docs/queue.md); NULL keys are never deduplicated.
n8n's raw INSERT names none of them: each is NULL or NOT NULL with a database default (0,
100). The CHECKs keep the counts non-negative.
How it avoids long locks: adding the columns is a catalog update (constant defaults, no
rewrite); the unique index is built CONCURRENTLY (writes continue; an INVALID leftover is
dropped first), the CHECKs added NOT VALID and validated in their own transactions. The index
build commits the columns, so each is added IF NOT EXISTS and a rerun after a failure finishes
the job; the downgrade drops the index first, then the rest in one transaction.
Rolling back drops what jobs hold (tracebacks, snooze counts, keys): the data-loss guard asks
for consent when any row holds a value other than the column's default.
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - add_column processing_jobs.error_traceback: ACCESS EXCLUSIVE, briefly: a catalog update, no
    scan or rewrite.
  - add_column processing_jobs.snoozes: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - add_column processing_jobs.max_snoozes: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - add_column processing_jobs.dedupe_key: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - create_index idx_processing_jobs_dedupe_key CONCURRENTLY on processing_jobs: SHARE UPDATE
    EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a failed build is
    dropped first).
  - check constraint processing_jobs_max_snoozes_check on processing_jobs: ADD ... NOT VALID takes
    ACCESS EXCLUSIVE, briefly: a catalog update, no scan or rewrite; then VALIDATE scans under
    SHARE UPDATE EXCLUSIVE, reads and writes continue.
  - check constraint processing_jobs_snoozes_check on processing_jobs: ADD ... NOT VALID takes
    ACCESS EXCLUSIVE, briefly: a catalog update, no scan or rewrite; then VALIDATE scans under
    SHARE UPDATE EXCLUSIVE, reads and writes continue.
  downgrade:
  - drop_constraint processing_jobs_snoozes_check on processing_jobs: ACCESS EXCLUSIVE, briefly: a
    catalog update, no scan or rewrite.
  - drop_constraint processing_jobs_max_snoozes_check on processing_jobs: ACCESS EXCLUSIVE,
    briefly: a catalog update, no scan or rewrite.
  - drop_index idx_processing_jobs_dedupe_key CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and
    writes continue.
  - drop_column processing_jobs.dedupe_key: ACCESS EXCLUSIVE, briefly; under it the data-loss guard
    first looks for data (reading the table until it finds some) unless the operator consented.
  - drop_column processing_jobs.max_snoozes: ACCESS EXCLUSIVE, briefly; under it the data-loss
    guard first looks for data (reading the table until it finds some) unless the operator
    consented.
  - drop_column processing_jobs.snoozes: ACCESS EXCLUSIVE, briefly; under it the data-loss guard
    first looks for data (reading the table until it finds some) unless the operator consented.
  - drop_column processing_jobs.error_traceback: ACCESS EXCLUSIVE, briefly; under it the data-loss
    guard first looks for data (reading the table until it finds some) unless the operator
    consented.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 11:21:15.525775+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What each direction drops, checked for data by the guard (media_db/deploy/data_loss.py).
drops_columns = (
    "processing_jobs.dedupe_key",
    "processing_jobs.max_snoozes",
    "processing_jobs.snoozes",
    "processing_jobs.error_traceback",
)
# `make lint-sql` findings made on purpose: direction -> rule -> why.
lint_waivers = {
    "upgrade": {
        "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
    },
    "downgrade": {
        "ban-drop-column": "declared; the data-loss guard checks the column under its lock",
        "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
    },
}


def upgrade() -> None:
    # Columns first, each IF NOT EXISTS: the index build below commits them, so a run killed
    # after that finds them on its next try.
    op.add_column(
        "processing_jobs",
        sa.Column("error_traceback", sa.Text(), nullable=True),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column("snoozes", sa.Integer(), server_default=sa.text("0"), nullable=False),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column("max_snoozes", sa.Integer(), server_default=sa.text("100"), nullable=False),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        if_not_exists=True,
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_dedupe_key",
            "processing_jobs",
            ["dedupe_key"],
            unique=True,
            postgresql_where=sa.text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )

    # Drop a leftover of a failed earlier run, so that running the revision again finishes it.
    op.drop_constraint(
        op.f("processing_jobs_max_snoozes_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.create_check_constraint(
        op.f("processing_jobs_max_snoozes_check"),
        "processing_jobs",
        "max_snoozes >= 0",
        postgresql_not_valid=True,
    )
    # VALIDATE in a transaction of its own: it scans without blocking writes.
    with op.get_context().autocommit_block():
        op.execute(
            "ALTER TABLE processing_jobs VALIDATE CONSTRAINT processing_jobs_max_snoozes_check"
        )

    # Drop a leftover of a failed earlier run, so that running the revision again finishes it.
    op.drop_constraint(
        op.f("processing_jobs_snoozes_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.create_check_constraint(
        op.f("processing_jobs_snoozes_check"),
        "processing_jobs",
        "snoozes >= 0",
        postgresql_not_valid=True,
    )
    # VALIDATE in a transaction of its own: it scans without blocking writes.
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE processing_jobs VALIDATE CONSTRAINT processing_jobs_snoozes_check")


def downgrade() -> None:
    # Index work first (it commits, and is idempotent); then one transaction for the rest, so
    # a run killed half-way leaves either everything or nothing of it to do again.
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_dedupe_key",
            table_name="processing_jobs",
            postgresql_where=sa.text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"),
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_constraint(
        op.f("processing_jobs_snoozes_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.drop_constraint(
        op.f("processing_jobs_max_snoozes_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.drop_column("processing_jobs", "dedupe_key")
    op.drop_column("processing_jobs", "max_snoozes")
    op.drop_column("processing_jobs", "snoozes")
    op.drop_column("processing_jobs", "error_traceback")
