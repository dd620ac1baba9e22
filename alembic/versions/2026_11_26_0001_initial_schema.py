"""Initial schema: media_items, analysis_results, processing_jobs and the plan's six indexes.

Why: implements the seed plan's 001_initial_schema.sql as a versioned, reversible revision. The
result is catalog-identical to the plan's SQL (same columns, types, defaults, nullability, and
PostgreSQL's own constraint names), so a database built earlier by hand with that SQL can be
stamped at this revision. Every default is a server default: n8n writes these rows with raw SQL.

Deliberately *not* the plan's SQL: no `IF NOT EXISTS` (a half-existing schema must fail loudly,
not be silently skipped), and the rollback drops our three tables by name, children first, with no
CASCADE that could reach objects of other applications in this shared database.

Locks: creates new tables only; nothing existing is touched.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# What downgrade() drops, read by the data-loss guard (media_db/safety.py) before any step runs.
drops_tables = ("processing_jobs", "analysis_results", "media_items")

MINIMUM_SERVER_VERSION_NUM = 130000


def require_server_version_sql(minimum: int = MINIMUM_SERVER_VERSION_NUM) -> str:
    """Fails before any change on a server without core gen_random_uuid(), in online and offline
    (--sql) runs alike; env.py checks the same online, this covers scripts applied by psql."""
    # No `%` placeholders: offline rendering would double them. No trailing `;`: Alembic adds it.
    return f"""
DO $$
BEGIN
    IF current_setting('server_version_num')::int < {minimum:d} THEN
        RAISE EXCEPTION USING MESSAGE = 'media analysis schema needs PostgreSQL 13 or newer '
            || '(gen_random_uuid() is core from 13); this server is '
            || current_setting('server_version') || '. Nothing was changed.';
    END IF;
END
$$"""


def timestamptz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute(require_server_version_sql())

    op.create_table(
        "media_items",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("source_type", sa.String(50), nullable=False),
        sa.Column("local_path", sa.Text()),
        sa.Column("file_size", sa.BigInteger()),
        sa.Column("mime_type", sa.String(100)),
        sa.Column("duration_seconds", sa.Double()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", timestamptz(), server_default=sa.text("now()")),
        sa.Column("updated_at", timestamptz(), server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="media_items_pkey"),
    )
    op.create_table(
        "analysis_results",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("media_item_id", sa.Uuid()),
        sa.Column("analysis_type", sa.String(50), nullable=False),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), server_default=sa.text("'pending'")),
        sa.Column("result_data", postgresql.JSONB()),
        sa.Column("error_message", sa.Text()),
        sa.Column("token_usage", sa.Integer()),
        sa.Column("processing_time_ms", sa.Integer()),
        sa.Column("created_at", timestamptz(), server_default=sa.text("now()")),
        sa.Column("completed_at", timestamptz()),
        sa.PrimaryKeyConstraint("id", name="analysis_results_pkey"),
        sa.ForeignKeyConstraint(
            ["media_item_id"],
            ["media_items.id"],
            name="analysis_results_media_item_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "processing_jobs",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("media_item_id", sa.Uuid()),
        sa.Column("workflow_type", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), server_default=sa.text("'queued'")),
        sa.Column("priority", sa.Integer(), server_default=sa.text("5")),
        sa.Column("error_message", sa.Text()),
        sa.Column("started_at", timestamptz()),
        sa.Column("completed_at", timestamptz()),
        sa.Column("created_at", timestamptz(), server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="processing_jobs_pkey"),
        sa.ForeignKeyConstraint(
            ["media_item_id"],
            ["media_items.id"],
            name="processing_jobs_media_item_id_fkey",
            ondelete="CASCADE",
        ),
    )

    # Plain CREATE INDEX is fine here: the tables were created a moment ago in this transaction.
    op.create_index("idx_media_items_source_type", "media_items", ["source_type"])
    op.create_index("idx_media_items_created_at", "media_items", [sa.text("created_at DESC")])
    op.create_index("idx_analysis_results_media_id", "analysis_results", ["media_item_id"])
    op.create_index(
        "idx_analysis_results_type_provider", "analysis_results", ["analysis_type", "provider"]
    )
    op.create_index("idx_processing_jobs_status", "processing_jobs", ["status"])
    op.create_index("idx_processing_jobs_priority", "processing_jobs", [sa.text("priority DESC")])


def downgrade() -> None:
    # Children before parent, by name, no CASCADE: if anything outside this schema came to
    # depend on these tables, the rollback stops and says so instead of dropping it too.
    # Indexes and constraints go with their tables.
    op.drop_table("processing_jobs")
    op.drop_table("analysis_results")
    op.drop_table("media_items")
