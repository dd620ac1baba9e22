"""Every revision climbs up, down and up again: each downgrade really undoes its upgrade (but
for the migration history, which a downgrade keeps on purpose: it records the downgrade)."""

import pytest
from alembic import command
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine

from media_db.deploy import catalog
from media_db.deploy.history import TABLE as HISTORY
from media_db.deploy.project import VERSION_TABLE
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

REVISIONS = list(reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions())))


def schema(connection: Connection) -> catalog.Catalog:
    return {
        name: t
        for name, t in catalog.snapshot(connection).items()
        if name not in (VERSION_TABLE, HISTORY.name)
    }


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda r: r.revision)
def test_revision_goes_up_down_up(engine: Engine, revision: Script) -> None:
    previous = revision.down_revision or "base"
    assert isinstance(previous, str), "merge revisions need their own stairway step"
    with engine.connect() as connection:
        config = alembic_config(connection)
        command.upgrade(config, previous)
        before = schema(connection)
        command.upgrade(config, revision.revision)
        after = schema(connection)
        command.downgrade(config, previous)
        assert schema(connection) == before
        command.upgrade(config, revision.revision)
        assert schema(connection) == after
