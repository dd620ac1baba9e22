"""Long migration work reports while it runs: a concurrent index build its phase (read from
pg_stat_progress_create_index on a side connection), a batched backfill its rows done, rows left
and ETA; each revision logs its duration when it ends."""

import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool, text

from tests.conftest import FreshDatabase
from tests.helpers import BIN, Followed, alembic_config, environment, run, start

FAST = ["-x", "progress-interval=500ms"]  # the floor
# A pause after each batch keeps the backfill running past a few reports however fast the
# machine: 8 batches of 5,000 at 200 ms each (400,000 rows did the same, slowly).
PACED = [*FAST, "-x", "backfill-pause=200ms"]


def at(url: URL, revision: str) -> None:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), revision)


# Each batched backfill, with rows it has to do: (revision before, revision, rows to insert).
BACKFILLS = {
    # before 0002's CHECK (status IS NOT NULL) refuses new NULLs
    "0003": ("0001", "INSERT INTO processing_jobs (workflow_type, status) SELECT 'w', NULL"),
    # before 0008 makes priority NOT NULL (its batches fill NULL priorities with the default)
    "0008": ("0007", "INSERT INTO processing_jobs (workflow_type, priority) SELECT 'w', NULL"),
}


@pytest.mark.parametrize("revision", sorted(BACKFILLS))
def test_backfill_reports_rows_done_left_and_eta(
    fresh_database: FreshDatabase, revision: str
) -> None:
    before, rows = BACKFILLS[revision]
    url = fresh_database()
    at(url, before)
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text(f"{rows} FROM generate_series(1, 40000)"))
    done = run(["alembic", *PACED, "upgrade", revision], environment(url), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Progress: backfill processing_jobs: " in done.stderr
    assert "ETA" in done.stderr
    assert " rows done, " in done.stderr
    assert f"Upgrade {revision} took " in done.stderr


def test_concurrent_index_build_reports_its_phase(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    at(url, "0006")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as writer:
        # An open write: CREATE INDEX CONCURRENTLY waits for it before building.
        writer.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('w')"))
        migration = Followed(
            start([str(BIN / "alembic"), *FAST, "upgrade", "0007"], environment(url))
        )
        migration.wait_for(
            "Progress: CREATE INDEX CONCURRENTLY idx_processing_jobs_claim on processing_jobs: "
            "waiting for "
        )
        writer.commit()
    _, stderr = migration.communicate()
    assert migration.process.returncode == 0, stderr
    assert "Upgrade 0007 took " in stderr
