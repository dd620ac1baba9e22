"""queue: limits and pause per key

Why: (issue 36, parts 2 and 5) nothing limited calls per provider across the fleet (ten
workers with ten slots put 100 concurrent calls on one provider), and no provider's work could
be paused while it is down. Limits and pauses live in a table, changed without a deploy, and
the claim itself enforces them, whatever the number of workers:
- `processing_jobs.limit_key` (NULL: the job's workflow type; an analysis job may name its
  provider): the key `COALESCE(limit_key, workflow_type)` its limits are looked up by;
- `processing_limits` (key, max_running, per_second, paused, updated_at): one row per limited
  or paused key; a key without a row is claimed as before;
- `processing_limits_room(...)`: how many jobs of a key a claim may start, under the key's
  transaction-level advisory lock (claims of one key in turn), counting with fresh snapshots;
- `idx_processing_jobs_due_by_limit_key` (a limited key's due jobs in claim order) and
  `idx_processing_jobs_started_by_limit_key` (its starts in the last second).
n8n's raw INSERT names none of them: limit_key is NULL (its workflow type), and every column of
processing_limits but its key has a default or is NULL.
How it avoids long locks: the new table locks nothing existing; adding the column is a catalog
update (no default, no rewrite); both indexes are built CONCURRENTLY (writes continue; an
INVALID leftover is dropped first). The index builds commit the table and the column, so each
is created IF NOT EXISTS and a rerun after a failure finishes the job; the function comes last,
in the revision's final transaction. The downgrade drops the indexes first, then the rest in
one transaction.
Rolling back drops the limits and every job's limit_key: the data-loss guard asks for consent
when any row holds one.
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - create_table processing_limits: a new table, nothing existing is locked.
  - add_column processing_jobs.limit_key: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - create_index idx_processing_jobs_due_by_limit_key CONCURRENTLY on processing_jobs: SHARE UPDATE
    EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a failed build is
    dropped first).
  - create_index idx_processing_jobs_started_by_limit_key CONCURRENTLY on processing_jobs: SHARE
    UPDATE EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a failed
    build is dropped first).
  - create_entity function processing_limits_room(p_key character varying, p_max_running integer,
    p_per_second numeric, p_paused boolean): no table lock (a catalog row); calls after the commit
    run the new definition.
  downgrade:
  - drop_index idx_processing_jobs_started_by_limit_key CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads
    and writes continue.
  - drop_index idx_processing_jobs_due_by_limit_key CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and
    writes continue.
  - drop_column processing_jobs.limit_key: ACCESS EXCLUSIVE, briefly; under it the data-loss guard
    first looks for data (reading the table until it finds some) unless the operator consented.
  - drop_table processing_limits: ACCESS EXCLUSIVE, briefly; under it the data-loss guard first
    looks for data (reading the table until it finds some) unless the operator consented.
  - drop_entity function processing_limits_room(p_key character varying, p_max_running integer,
    p_per_second numeric, p_paused boolean): no table lock; refused, changing nothing, while a
    trigger still executes it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 11:59:49.217600+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic_utils.pg_function import PGFunction

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What each direction drops, checked for data by the guard (media_db/deploy/data_loss.py).
drops_columns = ("processing_jobs.limit_key",)
drops_tables = ("processing_limits",)
# `make lint-sql` findings made on purpose: direction -> rule -> why.
lint_waivers = {
    "downgrade": {
        "ban-drop-column": "declared; the data-loss guard checks the column under its lock",
        "ban-drop-function": "removed from the models, or undoing its creation; no trigger uses it",
        "ban-drop-table": "declared; the data-loss guard checks the table under its lock",
    },
}


def upgrade() -> None:
    # The table and the column first, each IF NOT EXISTS: the index builds below commit them,
    # so a run killed after that finds them on its next try.
    op.create_table(
        "processing_limits",
        sa.Column("key", sa.String(length=50), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("per_second", sa.Numeric(), nullable=True),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.CheckConstraint("max_running >= 1", name=op.f("processing_limits_max_running_check")),
        sa.CheckConstraint("per_second > 0", name=op.f("processing_limits_per_second_check")),
        sa.PrimaryKeyConstraint("key", name=op.f("processing_limits_pkey")),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column("limit_key", sa.String(length=50), nullable=True),
        if_not_exists=True,
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_due_by_limit_key",
            "processing_jobs",
            [
                sa.literal_column("COALESCE(limit_key, workflow_type)"),
                sa.literal_column("priority DESC"),
                "run_at",
                "created_at",
            ],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )

    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_started_by_limit_key",
            "processing_jobs",
            [sa.literal_column("COALESCE(limit_key, workflow_type)"), "started_at"],
            unique=False,
            postgresql_where=sa.text("started_at IS NOT NULL"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )

    # Last, in the revision's final transaction (with its version): a rerun never meets it.
    public_processing_limits_room = PGFunction(
        schema="public",
        signature=(
            "processing_limits_room(p_key character varying, p_max_running integer, "
            "p_per_second numeric, p_paused boolean)"
        ),
        definition=(
            "RETURNS integer\n"
            "    LANGUAGE plpgsql VOLATILE AS $$\n"
            "    DECLARE\n"
            "        room integer := 2147483647;\n"
            "        taken integer;\n"
            "        window_length interval;\n"
            "        starts integer;\n"
            "        since timestamptz;\n"
            "    BEGIN\n"
            "        IF p_paused THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NULL AND p_per_second IS NULL THEN\n"
            "            RETURN room;\n"
            "        END IF;\n"
            "        IF NOT pg_try_advisory_xact_lock(364013, "
            "hashtext(p_key)) THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NOT NULL THEN\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE status = 'running' AND COALESCE(limit_key, "
            "workflow_type) = p_key;\n"
            "            room := least(room, p_max_running - taken);\n"
            "        END IF;\n"
            "        IF p_per_second IS NOT NULL THEN\n"
            "            IF p_per_second >= 1 THEN\n"
            "                starts := floor(p_per_second);\n"
            "                window_length := interval '1 second';\n"
            "            ELSE\n"
            "                starts := 1;\n"
            "                window_length := interval '1 second' / "
            "p_per_second;\n"
            "            END IF;\n"
            "            since := clock_timestamp() - window_length;  -- a "
            "value\\: the index can range over it\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE COALESCE(limit_key, workflow_type) = p_key "
            "AND started_at > since;\n"
            "            room := least(room, starts - taken);\n"
            "        END IF;\n"
            "        RETURN greatest(room, 0);\n"
            "    END\n"
            "    $$"
        ),
    )
    op.create_entity(public_processing_limits_room)  # type: ignore[attr-defined]


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_started_by_limit_key",
            table_name="processing_jobs",
            postgresql_where=sa.text("started_at IS NOT NULL"),
            postgresql_concurrently=True,
            if_exists=True,
        )

    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_due_by_limit_key",
            table_name="processing_jobs",
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_exists=True,
        )

    op.drop_column("processing_jobs", "limit_key")
    op.drop_table("processing_limits")
    public_processing_limits_room = PGFunction(
        schema="public",
        signature=(
            "processing_limits_room(p_key character varying, p_max_running integer, "
            "p_per_second numeric, p_paused boolean)"
        ),
        definition=(
            "RETURNS integer\n"
            "    LANGUAGE plpgsql VOLATILE AS $$\n"
            "    DECLARE\n"
            "        room integer := 2147483647;\n"
            "        taken integer;\n"
            "        window_length interval;\n"
            "        starts integer;\n"
            "        since timestamptz;\n"
            "    BEGIN\n"
            "        IF p_paused THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NULL AND p_per_second IS NULL THEN\n"
            "            RETURN room;\n"
            "        END IF;\n"
            "        IF NOT pg_try_advisory_xact_lock(364013, "
            "hashtext(p_key)) THEN\n"
            "            RETURN 0;\n"
            "        END IF;\n"
            "        IF p_max_running IS NOT NULL THEN\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE status = 'running' AND COALESCE(limit_key, "
            "workflow_type) = p_key;\n"
            "            room := least(room, p_max_running - taken);\n"
            "        END IF;\n"
            "        IF p_per_second IS NOT NULL THEN\n"
            "            IF p_per_second >= 1 THEN\n"
            "                starts := floor(p_per_second);\n"
            "                window_length := interval '1 second';\n"
            "            ELSE\n"
            "                starts := 1;\n"
            "                window_length := interval '1 second' / "
            "p_per_second;\n"
            "            END IF;\n"
            "            since := clock_timestamp() - window_length;  -- a "
            "value\\: the index can range over it\n"
            "            SELECT count(*) INTO taken FROM processing_jobs\n"
            "            WHERE COALESCE(limit_key, workflow_type) = p_key "
            "AND started_at > since;\n"
            "            room := least(room, starts - taken);\n"
            "        END IF;\n"
            "        RETURN greatest(room, 0);\n"
            "    END\n"
            "    $$"
        ),
    )
    op.drop_entity(public_processing_limits_room)  # type: ignore[attr-defined]
