"""Fault: a session blocks 0005's downgrade in VALIDATE, after the helper constraints were
committed NOT VALID. The run fails in one line naming what it left behind; once the blocker is
gone the same downgrade goes through (it used to fail with DuplicateObject forever) and ends
catalog-identical to 0004."""

from alembic import command
from sqlalchemy import URL, create_engine, pool

from media_db.deploy import catalog
from media_db.deploy.project import VERSION_TABLE
from media_db.models import MigrationHistory
from tests.conftest import FreshDatabase
from tests.faults import (
    RETRY_NOTHING,
    assert_recovers,
    cut_by_a_queued_blocker,
    failure_line,
    scalar,
    seed_rows,
)
from tests.helpers import BIN, alembic_config, environment, run, start

# The downgrade's long wait: its LOCK of both tables tries analysis_results for a moment while
# holding processing_jobs, lets go, then waits for analysis_results first
# (media_db/deploy/lock_order.py). A blocker started in the short wait would get the table.
WAITING_FIRST = """
    SELECT count(*) FROM pg_locks w
    WHERE w.relation = 'analysis_results'::regclass AND NOT w.granted
      AND w.mode = 'AccessExclusiveLock'
      AND NOT EXISTS (
        SELECT FROM pg_locks h
        WHERE h.pid = w.pid AND h.granted AND h.relation = 'processing_jobs'::regclass
      )
"""


def ours(url: URL) -> catalog.Catalog:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        kept = (VERSION_TABLE, MigrationHistory.__tablename__)  # both outlive downgrades
        return {k: v for k, v in catalog.snapshot(connection).items() if k not in kept}


def test_downgrade_blocked_in_validate_reruns_to_0004(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0004")
        at_0004 = ours(url)
        # 0005 itself: the way down from anything newer would first undo revisions that are not
        # this test's (0010's asks for consent whenever jobs exist).
        command.upgrade(alembic_config(connection), "0005")
    rows = seed_rows(url)

    # The downgrade's VALIDATE of analysis_results times out behind a queued blocker.
    with cut_by_a_queued_blocker(
        url,
        "analysis_results",
        lambda: start(
            [str(BIN / "alembic"), *RETRY_NOTHING, "downgrade", "0004"], environment(url)
        ),
        lambda watcher: scalar(watcher, WAITING_FIRST),
    ) as downgrade:
        line = failure_line(downgrade)
        assert line.startswith("FAILED: downgrade 0005 -> 0004 failed: gave up after 1 attempt"), (
            line
        )
        assert "LOCK TABLE analysis_results IN SHARE UPDATE EXCLUSIVE MODE" in line
        assert "the database is at revision 0005" in line
        assert "constraint analysis_results_status_not_null_check added (NOT VALID)" in line
        assert "alembic -x lock_timeout=2s -x lock-retries=0 downgrade 0004` again" in line
    again = run(["alembic", "downgrade", "0004"], environment(url))
    assert again.returncode == 0, again.stderr
    assert ours(url) == at_0004
    assert_recovers(url, rows)
