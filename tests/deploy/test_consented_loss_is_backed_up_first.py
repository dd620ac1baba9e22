"""A drop the operator consented to first writes the rows (values) it destroys to a backup,
under the drop's own lock, and the printed command puts every one of them back (an explicit
NULL beside a default included); opting out (`-x backup=skip`) writes nothing."""

import json
import re
from pathlib import Path

from alembic import command
from sqlalchemy import URL, Connection, Engine, create_engine, inspect, pool, text

from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for, with_thumbnail
from tests.helpers import HEAD, NEXT_REVISION, OURS, alembic_config, environment, project_copy, run

__all__ = ["with_thumbnail"]  # the fixture, shared with the test of refusals

SEED = """
INSERT INTO media_items (id, source_url, source_type, metadata, file_size)
SELECT gen_random_uuid(), 'https://example.com/' || n, 'youtube',
       jsonb_build_object('n', n, 'quote', 'it''s, "csv"'), n * 1000
FROM generate_series(1, 250) n;
INSERT INTO processing_jobs (media_item_id, workflow_type, priority, error_message)
SELECT id, 'transcode', 3, E'line one\\nline two' FROM media_items;
INSERT INTO analysis_results (media_item_id, analysis_type, provider, result_data)
SELECT id, 'labels', 'openai', '{"labels": ["a", "b"]}' FROM media_items WHERE file_size > 100000;
"""
TABLES = ("media_items", "processing_jobs", "analysis_results")


def columns_of(connection: Connection) -> dict[str, list[str]]:
    """Each table's columns now: what a later comparison reads, so that columns a user's own
    revisions add above ours don't enter it."""
    return {
        table: [column["name"] for column in inspect(connection).get_columns(table)]
        for table in TABLES
    }


def contents(
    connection: Connection, columns: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Every row of our tables, as text: of `columns` (by default, every column they have now)."""
    connection.rollback()
    columns = columns or columns_of(connection)
    quote = connection.dialect.identifier_preparer.quote
    return {
        table: sorted(
            str(row)
            for row in connection.execute(
                text(f"SELECT {', '.join(map(quote, names))} FROM {table}")
            )
        )
        for table, names in columns.items()
    }


def backup_directory(root: Path) -> Path:
    [directory] = root.iterdir()
    return directory


def test_downgrade_base_with_consent_backs_up_every_row_and_restore_puts_them_back(
    engine: Engine, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), OURS)
        connection.exec_driver_sql(SEED)
        connection.commit()
        ours = columns_of(connection)
        before = contents(connection, ours)
        assert all(before.values())
    # The CLI, as an operator runs it: the restore command is printed.
    env = environment(engine.url, MIGRATION_BACKUP_DIR=str(backups), ALLOW_DATA_LOSS="1")
    downgraded = run(["alembic", "downgrade", "base"], env)
    assert downgraded.returncode == 0, downgraded.stderr
    directory = backup_directory(backups)
    assert f"make restore BACKUP={directory}" in downgraded.stderr
    manifest = json.loads((directory / "manifest.json").read_text())
    # In drop order: columns of later revisions, then the tables, children first; restore goes
    # the other way.
    entries = manifest["entries"]
    columns = [entry for entry in entries if entry["column"] is not None]
    assert entries[len(columns) :] == [entry for entry in entries if entry["column"] is None]
    assert [entry["table"] for entry in entries[len(columns) :]] == [
        "processing_jobs",
        "analysis_results",
        "media_items",
    ]

    refused = run(["python", "-m", "media_db.deploy.backup", "restore", str(directory)], env)
    assert refused.returncode == 1
    assert "media_items does not exist: bring the schema back first" in refused.stderr

    assert run(["alembic", "upgrade", "head"], env).returncode == 0
    restored = run(["make", "restore", f"BACKUP={directory}"], env)
    assert restored.returncode == 0, restored.stderr
    assert re.search(r"media_items: 250 restored", restored.stdout)
    with engine.connect() as connection:
        assert contents(connection, ours) == before


def test_a_dropped_column_is_backed_up_and_restored_by_key(
    with_thumbnail: tuple[Path, URL], tmp_path: Path
) -> None:
    project, url = with_thumbnail
    backups = tmp_path / "backups"
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        connection.execute(text("UPDATE media_items SET probe_path = 'kept.jpg'"))
        connection.execute(
            text("INSERT INTO media_items (source_url, source_type) VALUES ('no thumb', 't')")
        )
        connection.commit()
        before = sorted(connection.execute(text("SELECT id, probe_path FROM media_items")).all())
        x = ("allow-data-loss=true", f"backup-dir={backups}")
        command.downgrade(config_for(project, connection, *x), "-1")
        directory = backup_directory(backups)
        assert (directory / "media_items.probe_path.csv").read_text().count("\n") == 2
        command.upgrade(config_for(project, connection), "head")
        done = run(
            ["python", "-m", "media_db.deploy.backup", "restore", str(directory)], environment(url)
        )
        assert done.returncode == 0, done.stderr
        connection.rollback()
        after = sorted(connection.execute(text("SELECT id, probe_path FROM media_items")).all())
    assert after == before


def test_backup_skip_writes_nothing(with_thumbnail: tuple[Path, URL], tmp_path: Path) -> None:
    project, url = with_thumbnail
    backups = tmp_path / "backups"
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        connection.execute(text("UPDATE media_items SET probe_path = 'gone.jpg'"))
        connection.commit()
        x = ("allow-data-loss=true", f"backup-dir={backups}", "backup=skip")
        command.downgrade(config_for(project, connection, *x), "-1")
    assert not backups.exists()


CAPTION_REVISION = f'''"""Add media_items.probe_caption, with a default.

Why: a test revision. Locks: catalog only.
"""

import sqlalchemy as sa
from alembic import op

revision = "{NEXT_REVISION}"
down_revision = "{HEAD}"
branch_labels = depends_on = None
drops_columns = ("media_items.probe_caption",)


def upgrade() -> None:
    op.add_column("media_items", sa.Column("probe_caption", sa.Text(), server_default="untitled"))


def downgrade() -> None:
    op.drop_column("media_items", "probe_caption")
'''


CAPTIONS = text("SELECT source_url, probe_caption FROM media_items")


def test_an_explicit_null_beside_a_default_is_backed_up_and_comes_back_null(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    """Adding the column again fills every row with its default: a NULL written on purpose is a
    value that drop loses too, and one that holds the default loses nothing."""
    project, url, backups = project_copy(tmp_path), fresh_database(), tmp_path / "backups"
    (project / "alembic" / "versions" / f"2026_11_26_{NEXT_REVISION}_caption.py").write_text(
        CAPTION_REVISION
    )
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(config_for(project, connection), "head")
        connection.execute(
            text(
                "INSERT INTO media_items (source_url, source_type, probe_caption) "
                "VALUES ('given', 't', 'x'), ('null', 't', NULL)"
            )
        )
        connection.execute(
            text("INSERT INTO media_items (source_url, source_type) VALUES ('d', 't')")
        )
        connection.commit()
        before = sorted(
            connection.execute(text("SELECT source_url, probe_caption FROM media_items")).all()
        )
        x = ("allow-data-loss=true", f"backup-dir={backups}")
        command.downgrade(config_for(project, connection, *x), "-1")
        directory = backup_directory(backups)
        assert (directory / "media_items.probe_caption.csv").read_text().count("\n") == 3
        command.upgrade(config_for(project, connection), "head")
        done = run(
            ["python", "-m", "media_db.deploy.backup", "restore", str(directory)], environment(url)
        )
        assert done.returncode == 0, done.stderr
        connection.rollback()
        after = sorted(
            connection.execute(text("SELECT source_url, probe_caption FROM media_items")).all()
        )
    assert after == before == [("d", "untitled"), ("given", "x"), ("null", None)]
