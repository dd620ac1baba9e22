"""Fault: a session holds a row lock that 0003's batched backfill needs. 0003 commits batch by
batch, so its failure is not a clean rollback: the one line says so instead of claiming the
revision was rolled back. A re-run once the lock is gone finishes the backfill."""

from alembic import command
from sqlalchemy import create_engine, pool, text

from tests.conftest import FreshDatabase
from tests.faults import assert_recovers, failure_line, row_counts
from tests.helpers import alembic_config, environment, run


def test_backfill_blocked_by_a_row_lock_says_what_it_committed(
    fresh_database: FreshDatabase,
) -> None:
    url = fresh_database()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            text(
                "INSERT INTO processing_jobs (workflow_type, status) "
                "VALUES ('a', NULL), ('b', NULL)"
            )
        )
        connection.commit()
        command.upgrade(alembic_config(connection), "0002")
    rows = row_counts(url)
    with engine.connect() as holder:
        holder.execute(text("SELECT * FROM processing_jobs WHERE workflow_type = 'b' FOR UPDATE"))
        result = run(
            ["alembic", "-x", "lock_timeout=200ms", "-x", "lock-retries=0", "upgrade", "head"],
            environment(url),
        )
        line = failure_line(result)
        assert line.startswith(
            "FAILED: upgrade 0002 -> 0003 failed: gave up after 1 attempt, lock_timeout each time"
        ), line
        assert "SELECT * FROM processing_jobs WHERE workflow_type = 'b' FOR UPDATE" in line
        assert "the database is at revision 0002; left behind: what revision 0003 committed" in line
        holder.rollback()
    assert_recovers(url, rows)
    with engine.connect() as connection:
        assert (
            connection.scalar(text("SELECT count(*) FROM processing_jobs WHERE status = 'queued'"))
            == 2
        )
