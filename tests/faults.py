"""What every fault-injection test checks once the fault is over: a plain re-run reaches head,
`make verify` finds the live schema identical to the models, and no committed row was lost."""

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import URL, Connection, create_engine, pool, text

from tests.helpers import HEAD, environment, run

# A migration that gives up at its first lock timeout (a cut, where a deploy would retry).
RETRY_NOTHING = ["-x", "lock_timeout=2s", "-x", "lock-retries=0"]
WAITING_FOR = """
    SELECT count(*) FROM pg_locks
    WHERE relation = to_regclass(:table) AND NOT granted AND mode = :mode
"""

# Counted before the fault and after the recovery: every one must still be there.
TABLES = ("media_items", "analysis_results", "processing_jobs")


def seed_rows(url: URL) -> dict[str, int]:
    """A few committed rows in each of our tables, as n8n would have written them."""
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(
            text("""
                WITH media AS (
                    INSERT INTO media_items (source_url, source_type)
                    SELECT 'https://example.test/' || n, 'youtube' FROM generate_series(1, 3) n
                    RETURNING id
                ), results AS (
                    INSERT INTO analysis_results (media_item_id, analysis_type, provider)
                    SELECT id, 'transcript', 'whisper' FROM media RETURNING id
                )
                INSERT INTO processing_jobs (media_item_id, workflow_type)
                SELECT id, 'transcode' FROM media
            """)
        )
    return row_counts(url)


def row_counts(url: URL) -> dict[str, int]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return {t: int(connection.scalar(text(f"SELECT count(*) FROM {t}")) or 0) for t in TABLES}


def assert_recovers(url: URL, rows: dict[str, int]) -> None:
    upgraded = run(["alembic", "upgrade", "head"], environment(url))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"Database at revision {HEAD} (head)" in upgraded.stderr
    verified = run(["make", "verify"], environment(url))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Live schema matches the models" in verified.stdout
    assert row_counts(url) == rows, "a committed row was lost"


def failure_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed alembic run ends with (stdout); only log lines (stderr) besides."""
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    logs = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith(("INFO ", "WARNING ")) for line in logs), logs
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("FAILED: "), lines
    return lines[0]


def wait_until(condition: Callable[[], object], what: str, seconds: float = 180) -> None:
    """Polls `condition`; the bound is generous: Python starting alembic on a loaded machine
    has been seen to take tens of seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def scalar(connection: Connection, sql: str, **params: object) -> object:
    value = connection.execute(text(sql), params).scalar()
    connection.rollback()
    return value


@contextmanager
def cut_by_a_queued_blocker(
    url: URL,
    table: str,
    start_migration: Callable[[], subprocess.Popen[str]],
    migration_waits: Callable[[Connection], object],
) -> Iterator[subprocess.CompletedProcess[str]]:
    """A reader keeps the migration's ACCESS EXCLUSIVE request on `table` waiting (until
    `migration_waits`); a second session queues SHARE UPDATE EXCLUSIVE behind it, so it holds
    the table the moment the migration's transaction commits, and the migration's next step
    that needs it (a VALIDATE) times out. Yields the migration's finished run; the blocker lets
    go after the block."""
    engine = create_engine(url, poolclass=pool.NullPool)
    reader, blocker = engine.connect(), engine.connect()
    migration = None
    try:
        reader.execute(text(f"SELECT count(*) FROM {table}"))
        migration = start_migration()
        with engine.connect() as watcher:
            wait_until(lambda: migration_waits(watcher), f"the migration waits for {table}")
            locking = threading.Thread(
                target=blocker.execute,
                args=(text(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE"),),
            )
            locking.start()
            wait_until(
                lambda: scalar(watcher, WAITING_FOR, table=table, mode="ShareUpdateExclusiveLock"),
                "the blocker queues behind the migration",
            )
        reader.rollback()
        stdout, stderr = migration.communicate(timeout=300)
        locking.join()
        yield subprocess.CompletedProcess(migration.args, migration.returncode, stdout, stderr)
        blocker.commit()
    finally:
        if migration is not None and migration.poll() is None:  # a wait above failed
            migration.kill()
            migration.communicate()
        blocker.close()
        reader.close()
