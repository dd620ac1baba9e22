"""Fault: an index of ours left INVALID at head (a concurrent build that failed: here its lock
wait timed out). It has the right definition but serves no query; `make verify` must report it
instead of saying the schema matches. Taking its revision down and up again rebuilds it."""

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import URL, create_engine, pool, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateIndex

from media_db.repositories.jobs import CLAIM_INDEX
from tests.faults import assert_recovers, seed_rows
from tests.helpers import alembic_config, environment, run

NAME = str(CLAIM_INDEX.name)
DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
BUILD = str(CreateIndex(CLAIM_INDEX).compile(dialect=DIALECT)).replace(
    "CREATE INDEX", "CREATE INDEX CONCURRENTLY", 1
)
VALID = text(f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{NAME}'::regclass")


def revision_that_builds_it() -> str:
    """The newest revision whose upgrade creates the claim index (the models' one)."""
    for script in ScriptDirectory.from_config(alembic_config()).walk_revisions():
        if f'"{NAME}"' in Path(script.path).read_text().split("def downgrade", 1)[0]:
            return str(script.revision)
    raise AssertionError(f"no revision builds {NAME}")


def test_verify_reports_an_invalid_index(migrated: URL) -> None:
    rows = seed_rows(migrated)
    engine = create_engine(migrated, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as builder, engine.connect() as writer:
        builder.exec_driver_sql(f"DROP INDEX CONCURRENTLY {NAME}")
        writer.exec_driver_sql("BEGIN; UPDATE processing_jobs SET priority = priority")
        builder.exec_driver_sql("SET lock_timeout = '200ms'")
        with pytest.raises(OperationalError, match="lock timeout"):
            builder.exec_driver_sql(BUILD)
        writer.exec_driver_sql("ROLLBACK")
        assert builder.scalar(VALID) is False

    verified = run(["make", "verify"], environment(migrated))
    assert verified.returncode != 0
    assert f"index {NAME}: expected CREATE INDEX" in verified.stderr + verified.stdout
    assert "(INVALID" in verified.stderr + verified.stdout

    below = ScriptDirectory.from_config(alembic_config()).get_revision(revision_that_builds_it())
    # Down through its revision, and a user's above ours: one may drop a column holding values
    # (0010's hold the jobs' retry state): consent, the rows are kept.
    consent = ["-x", "allow-data-loss=true", "-x", "backup=skip"]
    down = run(["alembic", *consent, "downgrade", str(below.down_revision)], environment(migrated))
    assert down.returncode == 0, down.stdout + down.stderr
    assert_recovers(migrated, rows)
