"""At head, the models and the database agree: autogenerate proposes nothing, the live catalog
equals what the models create, and drift in either direction is caught."""

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Engine, create_engine, pool, text

from media_db.deploy.verify import revision_lag, schema_drift
from tests.helpers import alembic_config, environment, project_copy, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

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
        "processing_jobs column priority: expected integer NOT NULL DEFAULT 5, "
        "found integer NOT NULL DEFAULT 1",
    ]


def test_storage_parameter_drift_is_reported(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.execute(text("ALTER TABLE processing_jobs SET (fillfactor = 50)"))
        connection.commit()
        assert schema_drift(connection) == [
            "processing_jobs storage parameter fillfactor: unexpected (50)"
        ]
        with pytest.raises(CommandError, match="New upgrade operations detected"):
            command.check(alembic_config(connection))


def test_function_edited_by_hand_is_drift(engine: Engine) -> None:
    """verify compares bodies as pg_get_functiondef gives them (alembic check compares tables
    only: see test_checks_never_queue_for_a_lock_on_our_tables)."""
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.execute(
            text("""
                CREATE OR REPLACE FUNCTION media_items_touch_updated_at() RETURNS trigger
                LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$
            """)
        )
        connection.commit()
        assert schema_drift(connection) == [
            "function media_items_touch_updated_at(): expected CREATE OR REPLACE FUNCTION "
            "media_items_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $function$ BEGIN "
            "NEW.updated_at := now(); RETURN NEW; END $function$, found CREATE OR REPLACE "
            "FUNCTION media_items_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS "
            "$function$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $function$"
        ]
    verify = run(["python", "-m", "media_db.deploy.verify"], environment(engine.url))
    assert verify.returncode == 1
    assert "function media_items_touch_updated_at(): expected" in verify.stderr


def test_trigger_added_or_dropped_by_hand_is_drift(engine: Engine) -> None:
    """A trigger on our table is ours, declared or not."""
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.execute(text("DROP TRIGGER media_items_touch_updated_at ON media_items"))
        connection.execute(
            text(
                "CREATE TRIGGER jobs_touch BEFORE UPDATE ON processing_jobs "
                "FOR EACH ROW EXECUTE FUNCTION media_items_touch_updated_at()"
            )
        )
        connection.commit()
        assert schema_drift(connection) == [
            "media_items trigger media_items_touch_updated_at: missing (expected CREATE TRIGGER "
            "media_items_touch_updated_at BEFORE UPDATE ON media_items FOR EACH ROW EXECUTE "
            "FUNCTION media_items_touch_updated_at())",
            "processing_jobs trigger jobs_touch: unexpected (CREATE TRIGGER jobs_touch BEFORE "
            "UPDATE ON processing_jobs FOR EACH ROW EXECUTE FUNCTION "
            "media_items_touch_updated_at())",
        ]


def test_checks_never_queue_for_a_lock_on_our_tables(migrated: URL) -> None:
    """`make verify` (alembic check, then the catalog comparison) runs beside a writer's open
    transaction without asking for any lock on our tables: alembic_utils' entity comparison,
    which would (it re-creates the trigger in a savepoint), is left to `make revision`."""
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.connect() as writer:
        writer.execute(text("INSERT INTO media_items (source_url, source_type) VALUES ('u', 't')"))
        quick = {**environment(migrated), "MIGRATION_LOCK_TIMEOUT": "300ms"}
        done = run(["make", "verify"], quick)
        writer.rollback()
    assert done.returncode == 0, done.stdout + done.stderr


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


def test_empty_autogenerate_is_refused_and_writes_nothing(tmp_path: Path, engine: Engine) -> None:
    # In a copy: should autogenerate find something after all, the file lands there, not here.
    project = project_copy(tmp_path)
    versions = project / "alembic" / "versions"
    before = sorted(versions.glob("*.py"))
    config = Config(str(project / "alembic.ini"))
    config.attributes["skip_logging_config"] = True
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        config.attributes["connection"] = connection
        with pytest.raises(CommandError, match="no revision written"):
            command.revision(config, message="nothing", autogenerate=True)
    assert sorted(versions.glob("*.py")) == before
