"""At head, the models and the database agree: autogenerate proposes nothing, the live catalog
equals what the models create, and drift in either direction is caught."""

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, text

from media_db.verify import revision_lag, schema_drift
from tests.helpers import REPO_ROOT, alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def test_head_matches_the_models_exactly(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        command.check(alembic_config(connection))
        assert revision_lag(connection) is None
        assert schema_drift(connection) == []
        leftover = connection.scalar(
            text("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'media_analysis_verify%'")
        )
        assert leftover == 0, "verification must leave no scratch schema behind"


def test_drift_is_reported_object_by_object(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.execute(text("ALTER TABLE processing_jobs ALTER COLUMN priority SET DEFAULT 1"))
        connection.execute(text("DROP INDEX idx_media_items_created_at"))
        connection.execute(
            text("CREATE INDEX idx_media_items_created_at ON media_items (created_at)")
        )
        connection.commit()
        drift = schema_drift(connection)
    assert drift == [
        "media_items index idx_media_items_created_at: expected CREATE INDEX "
        "idx_media_items_created_at ON media_items USING btree (created_at DESC), found CREATE "
        "INDEX idx_media_items_created_at ON media_items USING btree (created_at)",
        "processing_jobs column priority: expected integer NULL DEFAULT 5, "
        "found integer NULL DEFAULT 1",
    ]


def test_database_behind_head_is_reported(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        assert revision_lag(connection) == (
            f"database is at no revision, head is {head}: run `make upgrade`"
        )
        command.upgrade(alembic_config(connection), "0001")
        assert (
            revision_lag(connection) == f"database is at 0001, head is {head}: run `make upgrade`"
        )


def test_empty_autogenerate_is_refused_and_writes_nothing(engine: Engine) -> None:
    before = sorted((REPO_ROOT / "alembic" / "versions").glob("*.py"))
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        with pytest.raises(CommandError, match="no revision written"):
            command.revision(alembic_config(connection), message="nothing", autogenerate=True)
    assert sorted((REPO_ROOT / "alembic" / "versions").glob("*.py")) == before
