"""Fault: the server goes away under a running migration: our backend terminated (as a
restart or an operator would), or the whole server stopped at once (a crash). The run ends in
one line, not a chained traceback: what failed, where the database is, what it left behind
(here 0007's INVALID index), what to run next. Once the server is back, a re-run reaches head."""

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, Connection, create_engine, pool, text

from media_db.deploy.lock import MIGRATION_SESSION_NAME
from media_db.dev.embedded import LocalServer
from tests.conftest import FreshDatabase
from tests.faults import assert_recovers, failure_line, scalar, seed_rows, wait_until
from tests.helpers import BIN, alembic_config, environment, start

BUILDING = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = :name
      AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND state = 'active'
"""
# The deploy options the run took from the environment (the suite's backup folder) come first.
NEXT = re.compile(
    r"next: once the cause is dealt with, run `(\S+=\S+ )*\.venv/bin/alembic -x "
    r"lock_timeout=1min upgrade head` again\.$"
)


def start_0007_and_hold_it(url: URL) -> tuple[subprocess.Popen[str], Connection, int]:
    """A database at 0006 with rows, alembic upgrading it, its concurrent build kept waiting
    by an open write (returned, with the building backend's pid)."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0006")
    writer = engine.connect()
    writer.execute(text("UPDATE processing_jobs SET priority = priority"))
    upgrade = start(
        [str(BIN / "alembic"), "-x", "lock_timeout=1min", "upgrade", "head"], environment(url)
    )
    with engine.connect() as watcher:
        wait_until(lambda: scalar(watcher, BUILDING, name=MIGRATION_SESSION_NAME), "0007 builds")
        pid = scalar(watcher, BUILDING, name=MIGRATION_SESSION_NAME)
    assert isinstance(pid, int)
    return upgrade, writer, pid


def ended(upgrade: subprocess.Popen[str]) -> str:
    stdout, stderr = upgrade.communicate(timeout=300)
    return failure_line(
        subprocess.CompletedProcess(upgrade.args, upgrade.returncode, stdout, stderr)
    )


def test_backend_terminated_mid_revision(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "0006")
    rows = seed_rows(url)
    upgrade, writer, pid = start_0007_and_hold_it(url)
    writer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    line = ended(upgrade)
    writer.rollback()
    writer.close()
    assert line.startswith(
        "FAILED: upgrade 0006 -> 0007 failed: terminating connection due to administrator command"
    ), line
    assert (
        "the database is at revision 0006; "
        "left behind: index idx_processing_jobs_claim added (INVALID);" in line
    )
    assert NEXT.search(line), line
    assert_recovers(url, rows)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A server of this test's own, since it is going to be crashed."""
    server = LocalServer(home=tmp_path / "postgres")
    server.ensure_running()
    yield server
    server.destroy()


def test_server_crash_mid_revision(own_server: LocalServer) -> None:
    url = own_server.url()
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "0006")
    rows = seed_rows(url)
    upgrade, writer, _ = start_0007_and_hold_it(url)
    postmaster = int((own_server.data / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown: no checkpoint, as in a crash
    line = ended(upgrade)
    writer.invalidate()
    assert line.startswith("FAILED: upgrade 0006 -> 0007 failed: "), line
    assert "the database did not answer afterwards (" in line
    assert "its revision was 0006 when last seen" in line
    assert NEXT.search(line), line

    wait_until(lambda: own_server.running_port() is None, "the server is down")
    own_server.ensure_running()  # crash recovery, on a new port
    assert_recovers(own_server.url(), rows)
