"""claim index per workflow type and limit key

Why: (issue 36, part 8) the due jobs of a limit key at its limit, or paused, were read and
skipped by every claim of the other keys, one heap fetch each (5,000 of them ahead: a claim
went from 0.8 ms to 2.3 ms), and a worker scoped to its workflow type whose own key had a limit
walked its whole queue on every claim without taking a job from it (9 ms a claim at 20,000
jobs). With a limited key due in its scope, the claim now takes each key's due jobs through an
index of that key (a limited one at most its room, one at its limit not at all), finding the
keys by a loose index scan. A scoped claim needs the keys of its own type in that order: this
index, workflow_type then COALESCE(limit_key, workflow_type) then the claim order, over queued
jobs only. The claim without limits keeps idx_processing_jobs_due(_by_type).
How it avoids long locks: built CONCURRENTLY (writes continue; an INVALID leftover of a failed
build is dropped first).
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - create_index idx_processing_jobs_due_by_type_and_limit_key CONCURRENTLY on processing_jobs:
    SHARE UPDATE EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a
    failed build is dropped first).
  downgrade:
  - drop_index idx_processing_jobs_due_by_type_and_limit_key CONCURRENTLY: SHARE UPDATE EXCLUSIVE,
    reads and writes continue.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 14:49:32.115445+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_due_by_type_and_limit_key",
            "processing_jobs",
            [
                "workflow_type",
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


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_due_by_type_and_limit_key",
            table_name="processing_jobs",
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_exists=True,
        )
