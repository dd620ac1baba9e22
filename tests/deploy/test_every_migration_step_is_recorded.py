"""Every upgrade, downgrade and stamp step leaves a row in the migration history, online or
offline, succeeded or failed; the history outlives `downgrade base`; the checksum ignores
formatting and catches a change to what runs."""

import argparse
import socket
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, pool, text

from media_db.deploy import history
from media_db.deploy.project import offline_sql
from media_db.dev.embedded import client
from tests.conftest import FreshDatabase
from tests.deploy.test_offline_sql_matches_online import psql_environment
from tests.helpers import HEAD, NEXT_REVISION, alembic_config, project_copy, run

REVISIONS = [
    s.revision
    for s in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]
ROWS = text(f"""
    SELECT revision, direction, outcome, database_role, client_host, project_version, checksum,
           mode, error, duration_ms, finished_at >= started_at AS ordered
    FROM {history.TABLE.name} ORDER BY id
""")


def rows(connection: Connection) -> list[tuple[str, str, str]]:
    connection.rollback()
    return [(r.revision, r.direction, r.outcome) for r in connection.execute(ROWS)]


def test_upgrade_from_base_records_every_step_with_who_when_and_checksum(engine: Engine) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        recorded = list(connection.execute(ROWS))
    # The steps before the table existed were kept and written once it did.
    assert [(r.revision, r.direction, r.outcome) for r in recorded] == [
        (rev, "upgrade", "succeeded") for rev in REVISIONS
    ]
    for row in recorded:
        assert row.database_role == engine.url.username
        assert row.client_host == socket.gethostname()
        assert row.project_version.startswith("0.1.0")
        assert row.mode == "online"
        assert row.ordered
        assert row.duration_ms >= 0
        assert row.checksum == history.checksum(script.get_revision(row.revision).path)


def test_downgrade_base_keeps_the_history_and_records_itself(engine: Engine) -> None:
    with engine.connect() as connection:
        config = alembic_config(connection)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")  # the history table is there already: kept, not rebuilt
        command.stamp(config, REVISIONS[-2])
        command.stamp(config, "head")
        recorded = rows(connection)
    ups = [(rev, "upgrade", "succeeded") for rev in REVISIONS]
    downs = [(rev, "downgrade", "succeeded") for rev in reversed(REVISIONS)]
    stamps = [(REVISIONS[-2], "stamp", "succeeded"), (HEAD, "stamp", "succeeded")]
    assert recorded == [*ups, *downs, *ups, *stamps]


FAILING_REVISION = f'''"""A revision that fails half-way.

Why: a test. Locks: none.
"""

from alembic import op

revision = "{NEXT_REVISION}"
down_revision = "{HEAD}"
branch_labels = depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE half_way (id int)")
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    pass
'''


def project_config(project: Path, connection: Connection) -> Config:
    config = Config(str(project / "alembic.ini"))
    config.attributes.update(skip_logging_config=True, connection=connection)
    config.cmd_opts = argparse.Namespace(x=[])
    return config


def test_a_failed_step_is_recorded_although_its_transaction_rolled_back(
    tmp_path: Path, engine: Engine
) -> None:
    project = project_copy(tmp_path)
    versions = project / "alembic" / "versions"
    (versions / f"2026_11_26_{NEXT_REVISION}_fails.py").write_text(FAILING_REVISION)
    with engine.connect() as connection:
        with pytest.raises(Exception, match="division by zero"):
            command.upgrade(project_config(project, connection), "head")
        assert rows(connection)[-2:] == [
            (HEAD, "upgrade", "succeeded"),
            (NEXT_REVISION, "upgrade", "failed"),
        ]
        failure = list(connection.execute(ROWS))[-1]
        assert failure.error == "division by zero"
        assert connection.scalar(text("SELECT to_regclass('half_way')")) is None
        assert connection.scalar(text("SELECT version_num FROM media_analysis_alembic_version"))


def test_offline_script_records_the_same_steps(fresh_database: FreshDatabase) -> None:
    # In process, as `make sql` writes it: the `--sql` command line is the subject of
    # test_offline_sql_matches_online.
    offline = offline_sql("upgrade", "head")
    url: URL = fresh_database()
    applied = run(
        [str(client("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        psql_environment(url),
        stdin=offline,
    )
    assert applied.returncode == 0, applied.stderr
    assert "pending" not in applied.stderr  # no notice from our history blocks
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        recorded = list(connection.execute(ROWS))
    assert [(r.revision, r.direction, r.outcome, r.mode) for r in recorded] == [
        (rev, "upgrade", "succeeded", "offline") for rev in REVISIONS
    ]
    assert all(r.client_host is None and r.database_role == url.username for r in recorded)


def test_checksum_ignores_formatting_and_catches_code_changes(tmp_path: Path) -> None:
    original = ScriptDirectory.from_config(alembic_config()).get_revision("0007")
    assert original is not None
    source = Path(original.path).read_text()
    path = tmp_path / "revision.py"

    reformatted = (
        source.replace(
            '"idx_processing_jobs_media_item_id": "ON', "'idx_processing_jobs_media_item_id': 'ON"
        )
        .replace('(media_item_id)",', "(media_item_id)',  # reformatted")
        .replace("Why: the worker's claim", "Why: the workers' claim")  # docstring edit
    )
    assert reformatted != source
    path.write_text(reformatted)
    assert history.checksum(path) == history.checksum(original.path)

    path.write_text(source.replace("ON processing_jobs (media_item_id)", "ON processing_jobs (id)"))
    assert history.checksum(path) != history.checksum(original.path)
