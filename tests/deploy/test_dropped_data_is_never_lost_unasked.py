"""Nothing committed is dropped without the operator's consent, column or table, even when a
writer (n8n) commits while the migration runs: the guard checks before any step, and the drop
checks again under its own lock, so a late row is either seen or waits for the drop and fails."""

import argparse
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, pool, text

from media_db.deploy.project import VERSION_TABLE
from tests.conftest import FreshDatabase
from tests.faults import scalar, wait_until
from tests.helpers import HEAD, NEXT_REVISION, OURS, alembic_config, project_copy

WAITING = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

THUMBNAIL_REVISION = f'''"""Add media_items.probe_path.

Why: a test revision. Locks: catalog only.
"""

import sqlalchemy as sa
from alembic import op

revision = "{NEXT_REVISION}"
down_revision = "{HEAD}"
branch_labels = depends_on = None
drops_columns = ("media_items.probe_path",)


def upgrade() -> None:
    op.add_column("media_items", sa.Column("probe_path", sa.Text()))


def downgrade() -> None:
    op.drop_column("media_items", "probe_path")
'''


def config_for(project: Path, connection: Connection, *x: str) -> Config:
    config = Config(str(project / "alembic.ini"))
    config.attributes["skip_logging_config"] = True
    config.attributes["connection"] = connection
    config.cmd_opts = argparse.Namespace(x=list(x))
    return config


@pytest.fixture
def with_thumbnail(tmp_path: Path, fresh_database: FreshDatabase) -> tuple[Path, URL]:
    """A project copy with one more revision that adds a column, applied to a fresh database
    holding one media item."""
    project, url = project_copy(tmp_path), fresh_database()
    (project / "alembic" / "versions" / f"2026_11_26_{NEXT_REVISION}_thumbnail.py").write_text(
        THUMBNAIL_REVISION
    )
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(config_for(project, connection), "head")
        connection.execute(
            text("INSERT INTO media_items (source_url, source_type) VALUES ('u', 't')")
        )
        connection.commit()
    return project, url


def version(connection: Connection) -> str | None:
    connection.rollback()
    found = connection.scalar(text(f"SELECT max(version_num) FROM {VERSION_TABLE}"))
    return None if found is None else str(found)


def test_a_column_holding_values_is_not_dropped_without_consent(
    with_thumbnail: tuple[Path, URL],
) -> None:
    project, url = with_thumbnail
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        connection.execute(text("UPDATE media_items SET probe_path = 'kept.jpg'"))
        connection.commit()
        with pytest.raises(CommandError, match=r"would drop media_items\.probe_path \(1 value\)"):
            command.downgrade(config_for(project, connection), "-1")
        assert version(connection) == NEXT_REVISION
        assert connection.scalar(text("SELECT probe_path FROM media_items")) == "kept.jpg"

        command.downgrade(config_for(project, connection, "allow-data-loss=true"), "-1")
        assert version(connection) == HEAD


def test_an_empty_column_is_dropped_without_asking(with_thumbnail: tuple[Path, URL]) -> None:
    project, url = with_thumbnail
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.downgrade(config_for(project, connection), "-1")
        assert version(connection) == HEAD


def race(
    url: URL, migrate: Callable[[Connection], None], write: str
) -> tuple[BaseException | None, Engine]:
    """Start `migrate` while another session holds `write` uncommitted; commit that write once
    the migration waits for its lock. Returns what the migration raised."""
    engine = create_engine(url, poolclass=pool.NullPool)
    raised: list[BaseException] = []
    writer = engine.connect()
    writer.execute(text(write))  # uncommitted: invisible to the guard's first check
    with engine.connect() as migrator:
        pid = migrator.scalar(text("SELECT pg_backend_pid()"))
        migrator.commit()

        def run() -> None:
            try:
                migrate(migrator)
            except BaseException as error:  # handed to the test thread
                raised.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        with engine.connect() as watcher:
            wait_until(
                lambda: scalar(watcher, WAITING, pid=pid), "the migration waits for the writer"
            )
        writer.commit()  # the row lands while the migration is past its first check
        writer.close()
        thread.join(timeout=300)
        assert not thread.is_alive(), "the migration did not end"
    return (raised[0] if raised else None), engine


def test_a_value_committed_during_the_downgrade_stops_the_drop(
    with_thumbnail: tuple[Path, URL],
) -> None:
    project, url = with_thumbnail
    raised, engine = race(
        url,
        lambda connection: command.downgrade(config_for(project, connection), "-1"),
        "UPDATE media_items SET probe_path = 'late.jpg'",
    )
    assert isinstance(raised, CommandError), raised
    assert "Refusing to drop media_items.probe_path: it holds a value" in str(raised)
    with engine.connect() as connection:
        assert version(connection) == NEXT_REVISION
        assert connection.scalar(text("SELECT probe_path FROM media_items")) == "late.jpg"


def test_rows_committed_during_downgrade_base_are_not_dropped(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), OURS)
    url = engine.url
    raised, engine = race(
        url,
        lambda connection: command.downgrade(alembic_config(connection), "base"),
        "INSERT INTO media_items (source_url, source_type) VALUES ('late', 'n8n')",
    )
    assert isinstance(raised, CommandError), raised
    assert "Refusing to drop media_items: it holds a row" in str(raised)
    with engine.connect() as connection:
        assert version(connection) == "0001"
        assert connection.scalar(text("SELECT source_url FROM media_items")) == "late"
        command.upgrade(alembic_config(connection), "head")  # and back, nothing lost
        assert version(connection) == HEAD
