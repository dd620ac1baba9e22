"""`make adopt` stamps a database built by hand with the plan's SQL only when its catalog is
exactly revision 0001's; on any drift it lists each difference and changes nothing."""

from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db.deploy.project import VERSION_TABLE
from tests.conftest import FreshDatabase
from tests.helpers import HEAD, environment, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

PLAN_SQL = (Path(__file__).parents[1] / "sql" / "seed_plan_001_initial_schema.sql").read_text()


def plan_built(url: URL, *drift: str) -> None:
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.exec_driver_sql(PLAN_SQL)
        connection.execute(
            text("INSERT INTO media_items (source_url, source_type) VALUES ('u', 's')")
        )
        for statement in drift:
            connection.execute(text(statement))


def version(url: URL) -> str | None:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        if connection.scalar(text("SELECT to_regclass(:t)"), {"t": VERSION_TABLE}) is None:
            return None
        return str(connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")))


def test_a_plan_built_database_is_stamped_then_upgrades(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    plan_built(url)
    adopted = run(["make", "adopt"], environment(url))
    assert adopted.returncode == 0, adopted.stderr
    assert "Adopted: the live schema matches revision 0001" in adopted.stdout
    assert version(url) == "0001"
    assert run(["make", "upgrade"], environment(url)).returncode == 0
    assert version(url) == HEAD


def test_a_drifted_database_is_refused_with_each_difference(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    plan_built(
        url,
        "DROP INDEX idx_processing_jobs_priority",
        "ALTER TABLE media_items ALTER COLUMN mime_type TYPE varchar(200)",
    )
    refused = run(["make", "adopt"], environment(url))
    assert refused.returncode != 0
    assert "Not adopted, nothing changed:" in refused.stderr
    assert "processing_jobs index idx_processing_jobs_priority: missing" in refused.stderr
    assert (
        "media_items column mime_type: expected character varying(100) NULL, found "
        "character varying(200) NULL" in refused.stderr
    )
    assert version(url) is None
