"""Fault: a backend of an earlier migration is still busy (its client gone, or not). The
migrator does not start DDL next to it: it waits, naming it, and when the wait bound passes it
gives up in one line, having changed nothing."""

import contextlib
import threading

from alembic import command
from sqlalchemy import URL, create_engine, pool, text
from sqlalchemy.exc import OperationalError

from media_db.deploy.lock import MIGRATION_SESSION_NAME
from tests.faults import assert_recovers, failure_line, scalar, seed_rows, wait_until
from tests.helpers import alembic_config, environment, run


def test_migrator_waits_for_a_busy_migration_backend_then_gives_up(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).connect() as connection:
        command.downgrade(alembic_config(connection), "0006")
    rows = seed_rows(migrated)
    earlier = create_engine(
        migrated,
        poolclass=pool.NullPool,
        connect_args={"application_name": MIGRATION_SESSION_NAME},
    ).connect()
    pid = earlier.scalar(text("SELECT pg_backend_pid()"))
    earlier.rollback()

    def busy() -> None:
        with contextlib.suppress(OperationalError):  # cancelled below
            # Busy far longer than alembic can take to start on a loaded machine.
            earlier.execute(text("SELECT pg_sleep(600)"))

    sleeping = threading.Thread(target=busy)
    sleeping.start()
    with create_engine(migrated, poolclass=pool.NullPool).connect() as watcher:
        try:
            wait_until(
                lambda: (
                    scalar(watcher, "SELECT state FROM pg_stat_activity WHERE pid = :p", p=pid)
                    == "active"
                ),
                "the earlier backend is busy",
            )
            result = run(
                ["alembic", "-x", "lock-wait=1s", "upgrade", "head"], environment(migrated)
            )
        finally:
            scalar(watcher, "SELECT pg_cancel_backend(:p)", p=pid)
    line = failure_line(result)
    assert line.startswith(
        f"FAILED: A migration backend is still running: pid {pid} ({MIGRATION_SESSION_NAME}, "
        "active since"
    ), line
    assert "SELECT pg_sleep(600)" in line
    assert "nothing was changed" in line
    assert "(the database is at revision 0006, unchanged)" in line
    sleeping.join()
    earlier.close()
    assert_recovers(migrated, rows)
