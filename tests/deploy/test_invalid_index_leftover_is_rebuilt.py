"""A failed CREATE INDEX CONCURRENTLY leaves an INVALID index that keeps the name; `IF NOT
EXISTS` alone would keep it forever. Revision 0007 drops such a leftover and builds it again."""

import contextlib

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

VALIDITY = text("""
    SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'idx_processing_jobs_claim'
""")


def test_invalid_leftover_is_replaced_by_a_valid_index(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0006")
        connection.exec_driver_sql(
            "INSERT INTO processing_jobs (workflow_type) VALUES ('a'), ('a')"
        )
        connection.commit()
    # A failed concurrent build, as an interrupted deploy would leave it (duplicate keys).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        with contextlib.suppress(IntegrityError):
            connection.exec_driver_sql(
                "CREATE UNIQUE INDEX CONCURRENTLY idx_processing_jobs_claim "
                "ON processing_jobs (workflow_type)"
            )
        assert connection.execute(VALIDITY).one()[0] is False

    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0007")  # 0010 replaces this index later
        valid, definition = connection.execute(VALIDITY).one()
    assert valid is True
    assert definition.endswith(
        "(priority DESC, created_at) WHERE ((status)::text = 'queued'::text)"
    )
