"""Fault: kill -9 of alembic while 0007 builds an index CONCURRENTLY. Its lock session dies
with it, but its server backend goes on with the build. The next migrator must not start DDL
next to that orphan: it waits for it, naming it, then finishes the upgrade."""

import os
import signal
import subprocess

from alembic import command
from sqlalchemy import URL, create_engine, pool, text

from media_db.deploy.lock import MIGRATION_SESSION_NAME
from tests.conftest import FreshDatabase
from tests.faults import assert_recovers, scalar, seed_rows, wait_until
from tests.helpers import BIN, HEAD, Followed, alembic_config, environment, start

BUILDING = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = :name
      AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND state = 'active'
"""


def alembic(url: URL, *args: str) -> subprocess.Popen[str]:
    return start([str(BIN / "alembic"), *args], environment(url))


def test_next_migrator_waits_for_the_orphaned_build(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0006")
    rows = seed_rows(url)

    # An open write keeps the concurrent build waiting, so it is still running at the kill.
    writer = engine.connect()
    writer.execute(text("UPDATE processing_jobs SET priority = priority"))
    first = alembic(url, "-x", "lock_timeout=1min", "upgrade", "head")
    with engine.connect() as watcher:
        wait_until(lambda: scalar(watcher, BUILDING, name=MIGRATION_SESSION_NAME), "0007 builds")
        orphan = scalar(watcher, BUILDING, name=MIGRATION_SESSION_NAME)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
        second = Followed(alembic(url, "upgrade", "head"))
        # It has the migration lock and has seen the orphan (however long Python took to start).
        second.wait_for("Waiting for a migration backend still running")
        assert scalar(watcher, BUILDING, name=MIGRATION_SESSION_NAME) == orphan, "orphan alive"
        assert second.process.poll() is None, "the second migrator must wait for the orphan"
    writer.rollback()  # the orphan's build completes; the second migrator goes on
    writer.close()
    _, logs = second.communicate()
    assert second.process.returncode == 0, logs
    assert "Waiting for a migration backend still running" in logs
    assert f"pid {orphan} ({MIGRATION_SESSION_NAME}, active since" in logs
    assert "CREATE INDEX CONCURRENTLY" in logs
    assert f"Database at revision {HEAD} (head)" in logs
    assert_recovers(url, rows)
