"""`alembic downgrade base` removes every object of ours and nothing else, but for the version
table (emptied) and the migration history (kept: it records the downgrade itself)."""

import pytest
from alembic import command
from sqlalchemy import Engine, text

from media_db.deploy import catalog
from media_db.deploy.history import TABLE as HISTORY
from media_db.deploy.project import VERSION_TABLE
from media_db.models import Base
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

OUR_RELATIONS = text("""
    SELECT relname FROM pg_class
    WHERE relnamespace = CAST(current_schema() AS regnamespace)
      AND relname NOT IN (:version_table, :version_index)
      AND relname NOT LIKE :history
""")


def test_downgrade_base_drops_our_tables_indexes_and_constraints(engine: Engine) -> None:
    with engine.connect() as connection:
        config = alembic_config(connection)
        command.upgrade(config, "head")
        tables = set(catalog.snapshot(connection))
        assert set(Base.metadata.tables) <= tables
        command.downgrade(config, "base")

        leftovers = connection.scalars(
            OUR_RELATIONS,
            {
                "version_table": VERSION_TABLE,
                "version_index": f"{VERSION_TABLE}_pkc",
                "history": f"{HISTORY.name}%",  # the table, its key and its identity sequence
            },
        ).all()
        assert leftovers == []
        assert connection.scalar(text(f"SELECT count(*) FROM {VERSION_TABLE}")) == 0
        last = connection.execute(
            text(f"SELECT revision, direction FROM {HISTORY.name} ORDER BY id DESC LIMIT 1")
        ).one()
        assert tuple(last) == ("0001", "downgrade")
