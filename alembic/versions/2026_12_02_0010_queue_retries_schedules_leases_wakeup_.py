"""Queue retries, schedules, leases, wakeup and pruning

Why: a handler that raised failed its job for good, a slow worker's job could be handed to a
second one, idle workers found n8n's inserts only at their next poll, and finished jobs stayed
forever. Each job now counts its `attempts` up to `max_attempts` (default 5) and is not claimed
before `run_at` (schedules, retry backoff); a claim holds a lease (`lease_token`, valid until
`locked_until`) that only its holder can complete or fail, and an expired lease makes the job
claimable again. The claim index becomes `idx_processing_jobs_due` (priority, run_at,
created_at; queued jobs), built before the old one is dropped, so claims always have an index.
Expired leases and finished jobs (for pruning) get partial indexes of their own,
analysis_results one on created_at. An AFTER INSERT trigger, once per statement, notifies
`media_analysis_jobs`, so a raw INSERT wakes idle workers. n8n's raw inserts name none of the
new columns: each is NOT NULL with a database default, or NULL (the lease) until a claim.
Rolling back drops the retry state, schedules and leases: every job row holds them, so the
data-loss guard asks for consent whenever jobs exist (a job scheduled for later is then due).
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - create_entity function processing_jobs_notify(): no table lock (a catalog row); calls after the
    commit run the new definition.
  - create_entity trigger processing_jobs_notify on processing_jobs: SHARE ROW EXCLUSIVE on
    processing_jobs, briefly (a catalog update, no scan), waiting at most the session's
    lock_timeout: writes wait, reads continue.
  - create_index idx_analysis_results_created_at CONCURRENTLY on analysis_results: SHARE UPDATE
    EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a failed build is
    dropped first).
  - add_column processing_jobs.attempts: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - add_column processing_jobs.max_attempts: ACCESS EXCLUSIVE, briefly: a catalog update, no scan
    or rewrite.
  - add_column processing_jobs.run_at: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - add_column processing_jobs.locked_until: ACCESS EXCLUSIVE, briefly: a catalog update, no scan
    or rewrite.
  - add_column processing_jobs.lease_token: ACCESS EXCLUSIVE, briefly: a catalog update, no scan or
    rewrite.
  - create_index idx_processing_jobs_due CONCURRENTLY on processing_jobs: SHARE UPDATE EXCLUSIVE,
    reads and writes continue during the build (an INVALID leftover of a failed build is dropped
    first).
  - create_index idx_processing_jobs_finished CONCURRENTLY on processing_jobs: SHARE UPDATE
    EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a failed build is
    dropped first).
  - create_index idx_processing_jobs_lease CONCURRENTLY on processing_jobs: SHARE UPDATE EXCLUSIVE,
    reads and writes continue during the build (an INVALID leftover of a failed build is dropped
    first).
  - drop_index idx_processing_jobs_claim CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes
    continue.
  - check constraint processing_jobs_attempts_check on processing_jobs: ADD ... NOT VALID takes
    ACCESS EXCLUSIVE, briefly: a catalog update, no scan or rewrite; then VALIDATE scans under
    SHARE UPDATE EXCLUSIVE, reads and writes continue.
  - check constraint processing_jobs_max_attempts_check on processing_jobs: ADD ... NOT VALID takes
    ACCESS EXCLUSIVE, briefly: a catalog update, no scan or rewrite; then VALIDATE scans under
    SHARE UPDATE EXCLUSIVE, reads and writes continue.
  downgrade:
  - drop_constraint processing_jobs_max_attempts_check on processing_jobs: ACCESS EXCLUSIVE,
    briefly: a catalog update, no scan or rewrite.
  - drop_constraint processing_jobs_attempts_check on processing_jobs: ACCESS EXCLUSIVE, briefly: a
    catalog update, no scan or rewrite.
  - drop_index idx_processing_jobs_lease CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes
    continue.
  - drop_index idx_processing_jobs_finished CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes
    continue.
  - create_index idx_processing_jobs_claim CONCURRENTLY on processing_jobs: SHARE UPDATE EXCLUSIVE,
    reads and writes continue during the build (an INVALID leftover of a failed build is dropped
    first).
  - drop_index idx_processing_jobs_due CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and writes
    continue.
  - drop_column processing_jobs.lease_token: ACCESS EXCLUSIVE, briefly; under it the data-loss
    guard first looks for data (reading the table until it finds some) unless the operator
    consented.
  - drop_column processing_jobs.locked_until: ACCESS EXCLUSIVE, briefly; under it the data-loss
    guard first looks for data (reading the table until it finds some) unless the operator
    consented.
  - drop_column processing_jobs.run_at: ACCESS EXCLUSIVE, briefly; under it the data-loss guard
    first looks for data (reading the table until it finds some) unless the operator consented.
  - drop_column processing_jobs.max_attempts: ACCESS EXCLUSIVE, briefly; under it the data-loss
    guard first looks for data (reading the table until it finds some) unless the operator
    consented.
  - drop_column processing_jobs.attempts: ACCESS EXCLUSIVE, briefly; under it the data-loss guard
    first looks for data (reading the table until it finds some) unless the operator consented.
  - drop_index idx_analysis_results_created_at CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and
    writes continue.
  - drop_entity trigger processing_jobs_notify on processing_jobs: ACCESS EXCLUSIVE on
    processing_jobs, briefly (a catalog update, no scan), waiting at most the session's
    lock_timeout: reads and writes wait.
  - drop_entity function processing_jobs_notify(): no table lock; refused, changing nothing, while
    a trigger still executes it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:52:26.081584+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What each direction drops, checked for data by the guard (media_db/deploy/data_loss.py).
drops_columns = (
    "processing_jobs.lease_token",
    "processing_jobs.locked_until",
    "processing_jobs.run_at",
    "processing_jobs.max_attempts",
    "processing_jobs.attempts",
)
# `make lint-sql` findings made on purpose: direction -> rule -> why.
lint_waivers = {
    "upgrade": {
        "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
    },
    "downgrade": {
        "ban-drop-column": "declared; the data-loss guard checks the column under its lock",
        "ban-drop-constraint": "drops what the other direction adds, or a leftover, to re-run",
        "ban-drop-function": "removed from the models, or undoing its creation; no trigger uses it",
    },
}


def upgrade() -> None:
    # Columns first, each IF NOT EXISTS: the index builds below commit them, so a run killed
    # after that finds them on its next try.
    op.add_column(
        "processing_jobs",
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("5"), nullable=False),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column(
            "run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs",
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        if_not_exists=True,
    )
    op.add_column(
        "processing_jobs", sa.Column("lease_token", sa.UUID(), nullable=True), if_not_exists=True
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_analysis_results_created_at",
            "analysis_results",
            ["created_at"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_due",
            "processing_jobs",
            [sa.literal_column("priority DESC"), "run_at", "created_at"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_finished",
            "processing_jobs",
            ["completed_at"],
            unique=False,
            postgresql_where=sa.text("status IN ('completed', 'cancelled', 'failed')"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_lease",
            "processing_jobs",
            ["locked_until"],
            unique=False,
            postgresql_where=sa.text("status = 'running'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
    # The new claim index exists before the old one goes: claims never scan the table.
    with op.get_context().autocommit_block():
        op.drop_index(
            op.f("idx_processing_jobs_claim"),
            table_name="processing_jobs",
            postgresql_where="((status)::text = 'queued'::text)",
            postgresql_concurrently=True,
            if_exists=True,
        )
    # Drop a leftover of a failed earlier run, so that running the revision again finishes it.
    op.drop_constraint(
        op.f("processing_jobs_attempts_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.create_check_constraint(
        op.f("processing_jobs_attempts_check"),
        "processing_jobs",
        "attempts >= 0",
        postgresql_not_valid=True,
    )
    # VALIDATE in a transaction of its own: it scans without blocking writes.
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE processing_jobs VALIDATE CONSTRAINT processing_jobs_attempts_check")
    # Drop a leftover of a failed earlier run, so that running the revision again finishes it.
    op.drop_constraint(
        op.f("processing_jobs_max_attempts_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.create_check_constraint(
        op.f("processing_jobs_max_attempts_check"),
        "processing_jobs",
        "max_attempts >= 1",
        postgresql_not_valid=True,
    )
    # VALIDATE in a transaction of its own: it scans without blocking writes.
    with op.get_context().autocommit_block():
        op.execute(
            "ALTER TABLE processing_jobs VALIDATE CONSTRAINT processing_jobs_max_attempts_check"
        )
    # The wakeup last, in the transaction that records the revision: a rerun never finds a
    # half-made trigger.
    public_processing_jobs_notify = PGFunction(
        schema="public",
        signature="processing_jobs_notify()",
        definition=(
            "RETURNS trigger\n"
            "    LANGUAGE plpgsql AS $$\n"
            "    BEGIN\n"
            "        PERFORM pg_notify('media_analysis_jobs', '');\n"
            "        RETURN NULL;\n"
            "    END\n"
            "    $$"
        ),
    )
    op.create_entity(public_processing_jobs_notify)  # type: ignore[attr-defined]
    public_processing_jobs_processing_jobs_notify = PGTrigger(
        schema="public",
        signature="processing_jobs_notify",
        on_entity="public.processing_jobs",
        is_constraint=False,
        definition=(
            "AFTER INSERT ON public.processing_jobs FOR EACH STATEMENT "
            "EXECUTE FUNCTION processing_jobs_notify()"
        ),
    )
    op.create_entity(public_processing_jobs_processing_jobs_notify)  # type: ignore[attr-defined]


def downgrade() -> None:
    # Index work first (each commits, each idempotent); then one transaction for the rest, so
    # a run killed half-way leaves either everything or nothing of it to do again.
    with op.get_context().autocommit_block():
        op.create_index(
            op.f("idx_processing_jobs_claim"),
            "processing_jobs",
            [sa.literal_column("priority DESC"), "created_at"],
            unique=False,
            postgresql_where="((status)::text = 'queued'::text)",
            postgresql_concurrently=True,
            if_not_exists=True,
        )
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_lease",
            table_name="processing_jobs",
            postgresql_where=sa.text("status = 'running'"),
            postgresql_concurrently=True,
            if_exists=True,
        )
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_finished",
            table_name="processing_jobs",
            postgresql_where=sa.text("status IN ('completed', 'cancelled', 'failed')"),
            postgresql_concurrently=True,
            if_exists=True,
        )
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_due",
            table_name="processing_jobs",
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_exists=True,
        )
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_analysis_results_created_at",
            table_name="analysis_results",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_constraint(
        op.f("processing_jobs_max_attempts_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.drop_constraint(
        op.f("processing_jobs_attempts_check"), "processing_jobs", type_="check", if_exists=True
    )
    op.drop_column("processing_jobs", "lease_token")
    op.drop_column("processing_jobs", "locked_until")
    op.drop_column("processing_jobs", "run_at")
    op.drop_column("processing_jobs", "max_attempts")
    op.drop_column("processing_jobs", "attempts")
    public_processing_jobs_processing_jobs_notify = PGTrigger(
        schema="public",
        signature="processing_jobs_notify",
        on_entity="public.processing_jobs",
        is_constraint=False,
        definition=(
            "AFTER INSERT ON public.processing_jobs FOR EACH STATEMENT "
            "EXECUTE FUNCTION processing_jobs_notify()"
        ),
    )
    op.drop_entity(public_processing_jobs_processing_jobs_notify)  # type: ignore[attr-defined]
    public_processing_jobs_notify = PGFunction(
        schema="public",
        signature="processing_jobs_notify()",
        definition=(
            "RETURNS trigger\n"
            "    LANGUAGE plpgsql AS $$\n"
            "    BEGIN\n"
            "        PERFORM pg_notify('media_analysis_jobs', '');\n"
            "        RETURN NULL;\n"
            "    END\n"
            "    $$"
        ),
    )
    op.drop_entity(public_processing_jobs_notify)  # type: ignore[attr-defined]
