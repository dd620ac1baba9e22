"""A worker scoped to its workflow type claims through an index of its own type: the queued
jobs of other types ranked ahead of its own cost it nothing (through the claim order over
every type it walked past each of them)."""

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db.repositories.jobs import DEFAULT_LEASE, DEFAULT_PRIORITY, claim_many_sql
from tests.helpers import analyzed_plan

AHEAD = 20_000
# A claim that reads its own type's jobs only touches a few index and heap pages, and the limits
# per key (processing_limits, its index of starts): 46 measured on PostgreSQL 18, 40 before the
# limits; walking past the other type's jobs touched about 2,750 (measured without the index).
MOST_BUFFERS = 60
SEED_AHEAD = text("""
    INSERT INTO processing_jobs (workflow_type, priority)
    SELECT 'transcode', :priority FROM generate_series(1, :jobs)
""")


@pytest.mark.parametrize("analyzed", [True, False], ids=["statistics current", "never analyzed"])
def test_a_scoped_claim_reads_only_its_own_type(migrated: URL, analyzed: bool) -> None:
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(SEED_AHEAD, {"priority": DEFAULT_PRIORITY + 1, "jobs": AHEAD})
        connection.execute(text("INSERT INTO processing_jobs (workflow_type) VALUES ('probe')"))
    if analyzed:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE processing_jobs"))

    plan = analyzed_plan(
        migrated, claim_many_sql(10, True), {"workflow_type": "probe", "lease": DEFAULT_LEASE}
    )

    assert plan["Actual Rows"] == 1, "the probe job was not claimed"
    buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert buffers <= MOST_BUFFERS, (
        f"the scoped claim touched {buffers} buffers behind {AHEAD:,} jobs of another type"
    )
