"""Fault: an index of ours left INVALID at head (a concurrent build that failed: here its lock
wait timed out). It has the right definition but serves no query; `make verify` must report it
instead of saying the schema matches. Taking 0007 down and up again rebuilds it."""

import pytest
from sqlalchemy import URL, create_engine, pool, text
from sqlalchemy.exc import OperationalError

from tests.faults import assert_recovers, seed_rows
from tests.helpers import environment, run

CLAIM_INDEX = (
    "CREATE INDEX CONCURRENTLY idx_processing_jobs_claim "
    "ON processing_jobs (priority DESC, created_at) WHERE status = 'queued'"
)


VALID = text(
    "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_processing_jobs_claim'::regclass"
)


def test_verify_reports_an_invalid_index(migrated: URL) -> None:
    rows = seed_rows(migrated)
    engine = create_engine(migrated, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as builder, engine.connect() as writer:
        builder.exec_driver_sql("DROP INDEX CONCURRENTLY idx_processing_jobs_claim")
        writer.exec_driver_sql("BEGIN; UPDATE processing_jobs SET priority = priority")
        builder.exec_driver_sql("SET lock_timeout = '200ms'")
        with pytest.raises(OperationalError, match="lock timeout"):
            builder.exec_driver_sql(CLAIM_INDEX)
        writer.exec_driver_sql("ROLLBACK")
        assert builder.scalar(VALID) is False

    verified = run(["make", "verify"], environment(migrated))
    assert verified.returncode != 0
    assert "index idx_processing_jobs_claim: expected CREATE INDEX" in verified.stderr
    assert "(INVALID" in verified.stderr

    # Down through a user's revisions above ours too: one of theirs may drop a column holding
    # values (ours down to 0006 drop nothing that holds any).
    consent = ["-x", "allow-data-loss=true", "-x", "backup=skip"]
    down = run(["alembic", *consent, "downgrade", "0006"], environment(migrated))
    assert down.returncode == 0, down.stdout + down.stderr
    assert_recovers(migrated, rows)
