"""queue: periodic jobs, the last period each was enqueued for

Why: (issue 36, part 6) periodic work (prune, re-analysis) needed an outside cron. A periodic
job is declared in code (media_db.cron.Periodic: a name, a 5-field cron schedule in UTC, a
workflow type) and every worker given it enqueues it once per period, whatever their number.
The dedupe index holds only while a job is live, so a period whose job already finished could
be enqueued again: `processing_schedules` keeps, per periodic job's name, the start of the last
period enqueued. A worker moves the row forward (INSERT ... ON CONFLICT DO UPDATE ... WHERE the
stored period is older) and inserts the job in the same statement: the one whose update took
the period writes its job, the others find the row already moved and write nothing. Pruning
jobs forgets nothing (the row is not a job), and after a downtime only the current period is
enqueued (the row jumps to it), never the missed ones.
n8n neither reads nor writes it; processing_jobs is unchanged (the periodic job is a plain
INSERT, its dedupe_key naming the period).
How it avoids long locks: a new table; nothing existing is locked.
Rolling back drops the periods: the next worker to start records its current period again
without enqueueing it, as for a periodic job it never saw; the data-loss guard asks for
consent when the table holds rows.
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - create_table processing_schedules: a new table, nothing existing is locked.
  downgrade:
  - drop_table processing_schedules: ACCESS EXCLUSIVE, briefly; under it the data-loss guard first
    looks for data (reading the table until it finds some) unless the operator consented.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:43:08.256344+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What each direction drops, checked for data by the guard (media_db/deploy/data_loss.py).
drops_tables = ("processing_schedules",)
# `make lint-sql` findings made on purpose: direction -> rule -> why.
lint_waivers = {
    "downgrade": {
        "ban-drop-table": "declared; the data-loss guard checks the table under its lock",
    },
}


def upgrade() -> None:
    op.create_table(
        "processing_schedules",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("period", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("processing_schedules_pkey")),
    )


def downgrade() -> None:
    op.drop_table("processing_schedules")
