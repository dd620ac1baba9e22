"""`alembic upgrade head --sql`, made with no database at all and applied by psql, builds the
same catalog and records the same revision as an online upgrade."""

import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool, text

from media_db.deploy import catalog
from media_db.deploy.project import VERSION_TABLE
from media_db.dev.embedded import client
from tests.conftest import FreshDatabase
from tests.helpers import HEAD, alembic_config, environment, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def psql_environment(url: URL) -> dict[str, str]:
    parts = {
        "PGHOST": url.host,
        "PGPORT": url.port,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    return environment(**{key: str(value) for key, value in parts.items() if value is not None})


def test_offline_sql_applied_by_psql_equals_online_upgrade(fresh_database: FreshDatabase) -> None:
    offline = run(["alembic", "upgrade", "head", "--sql"], environment())  # no database set
    assert offline.returncode == 0, offline.stderr

    offline_url, online_url = fresh_database(), fresh_database()
    applied = run(
        [str(client("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        psql_environment(offline_url),
        stdin=offline.stdout,
    )
    assert applied.returncode == 0, applied.stderr
    with create_engine(online_url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "head")

    snapshots, versions = [], []
    for url in (offline_url, online_url):
        with create_engine(url, poolclass=pool.NullPool).connect() as connection:
            snapshots.append(catalog.snapshot(connection))
            versions.append(connection.scalars(text(f"SELECT * FROM {VERSION_TABLE}")).all())
    assert catalog.differences(snapshots[1], snapshots[0], set(snapshots[1])) == []
    assert versions[0] == versions[1] == [HEAD]
