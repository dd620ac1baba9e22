"""Record every migration step in media_analysis_migration_history.

Why: a deploy at 2 a.m. needs to know who applied what, when, for how long and whether it
worked, and whether a revision's file changed after it was applied. media_db/history.py writes
one row per upgrade, downgrade and stamp step: a success in the step's own transaction (atomic
with the version table), a failure on a separate connection (the step's transaction rolled
back), offline (--sql) as an INSERT in the script. Each row carries the checksum of the
revision's normalised code (ruff-proof). The table is declared in models/ like ours, so
autogenerate never proposes dropping it and `make verify` compares it. It holds the record of
every downgrade, `downgrade base` included: going back below this revision keeps it, as
Alembic keeps its version table, so re-applying this revision creates it only if missing, and
nothing is dropped (no `drops_tables`, no data-loss consent to ask for).
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - create_table media_analysis_migration_history IF NOT EXISTS: a new table, nothing existing is
    locked.
  downgrade:
  - media_analysis_migration_history is kept, nothing is locked.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 07:51:51.688074+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media_analysis_migration_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("revision", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "finished_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "database_role", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False
        ),
        sa.Column("client_host", sa.Text(), nullable=True),
        sa.Column(
            "client_addr",
            postgresql.INET(),
            server_default=sa.text("inet_client_addr()"),
            nullable=True,
        ),
        sa.Column("project_version", sa.String(length=64), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.CheckConstraint(
            "direction IN ('upgrade', 'downgrade', 'stamp')",
            name=op.f("media_analysis_migration_history_direction_check"),
        ),
        sa.CheckConstraint(
            "mode IN ('online', 'offline')",
            name=op.f("media_analysis_migration_history_mode_check"),
        ),
        sa.CheckConstraint(
            "outcome IN ('succeeded', 'failed')",
            name=op.f("media_analysis_migration_history_outcome_check"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("media_analysis_migration_history_pkey")),
        if_not_exists=True,
    )


def downgrade() -> None:
    # media_analysis_migration_history is kept: the audit trail outlives a downgrade,
    # which it records; like Alembic's version table, it is never dropped.
    pass
