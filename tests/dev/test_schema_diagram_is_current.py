"""docs/schema.md is what `make erd` writes from the models today."""

from media_db.dev.erd import DIAGRAM, render


def test_committed_diagram_matches_the_models() -> None:
    assert DIAGRAM.read_text() == render(), "docs/schema.md is stale: run `make erd` and commit"


def test_diagram_shows_every_table_column_and_relationship() -> None:
    diagram = render()
    assert "uuid id PK" in diagram
    assert "jsonb metadata" in diagram  # the column name, not the Python attribute
    assert 'media_items |o--o{ processing_jobs : "media_item_id, on delete cascade"' in diagram
