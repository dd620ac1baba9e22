"""`alembic downgrade base` removes every object of ours and nothing else."""

import pytest
from alembic import command
from sqlalchemy import Engine, text

from media_db import catalog
from media_db.migrations import VERSION_TABLE
from models import Base
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

OUR_RELATIONS = text("""
    SELECT relname FROM pg_class
    WHERE relnamespace = CAST(current_schema() AS regnamespace)
      AND relname NOT IN (:version_table, :version_index)
""")


def test_downgrade_base_drops_our_tables_indexes_and_constraints(engine: Engine) -> None:
    with engine.connect() as connection:
        config = alembic_config(connection)
        command.upgrade(config, "head")
        tables = set(catalog.snapshot(connection))
        assert set(Base.metadata.tables) <= tables
        command.downgrade(config, "base")

        leftovers = connection.scalars(
            OUR_RELATIONS, {"version_table": VERSION_TABLE, "version_index": f"{VERSION_TABLE}_pkc"}
        ).all()
        assert leftovers == []
        assert connection.scalar(text(f"SELECT count(*) FROM {VERSION_TABLE}")) == 0
