"""claim index per workflow type

Why: a worker scoped to its workflow type (run_worker(workflow_type=...), the README's form)
claimed through idx_processing_jobs_due, the claim order over every type: it walked past every
queued job of other types ranked ahead of its own, 190 ms a claim behind 200,000 of them. This
index leads with workflow_type, then the same claim order, over queued jobs only: a scoped
claim reads its own type's due jobs and nothing else. Unscoped claims keep the old index.
Locks: one line per operation, as `make revision` wrote them.
  upgrade:
  - create_index idx_processing_jobs_due_by_type CONCURRENTLY on processing_jobs: SHARE UPDATE
    EXCLUSIVE, reads and writes continue during the build (an INVALID leftover of a failed build is
    dropped first).
  downgrade:
  - drop_index idx_processing_jobs_due_by_type CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and
    writes continue.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:38:32.172568+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_processing_jobs_due_by_type",
            "processing_jobs",
            ["workflow_type", sa.literal_column("priority DESC"), "run_at", "created_at"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_processing_jobs_due_by_type",
            table_name="processing_jobs",
            postgresql_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
            if_exists=True,
        )
