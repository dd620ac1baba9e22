"""Move media_items.updated_at on every UPDATE, whoever writes.

Why: the plan sets updated_at on insert only (and its model's `onupdate` works for the ORM
alone); n8n updates rows with raw SQL. A BEFORE UPDATE trigger sets updated_at = now() on every
update from any writer, so the column means what it says.

The trigger is declared once for the models (models/triggers.py, attached to the table so
`make verify` compares it); this revision keeps its own copy, as revisions never import models.

Locks: CREATE TRIGGER takes SHARE ROW EXCLUSIVE on media_items for a catalog update only (no
scan): writes wait for a moment, reads continue.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION media_items_touch_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END
        $$""")
    op.execute("""
        CREATE TRIGGER media_items_touch_updated_at
        BEFORE UPDATE ON media_items
        FOR EACH ROW EXECUTE FUNCTION media_items_touch_updated_at()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER media_items_touch_updated_at ON media_items")
    op.execute("DROP FUNCTION media_items_touch_updated_at()")
