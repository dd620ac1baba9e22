"""Every revision climbs up, down and up again: each downgrade really undoes its upgrade."""

import pytest
from alembic import command
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Engine

from media_db import catalog
from tests.helpers import alembic_config

REVISIONS = list(reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions())))


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda r: r.revision)
def test_revision_goes_up_down_up(engine: Engine, revision: Script) -> None:
    previous = revision.down_revision or "base"
    assert isinstance(previous, str), "merge revisions need their own stairway step"
    with engine.connect() as connection:
        config = alembic_config(connection)
        command.upgrade(config, previous)
        before = catalog.snapshot(connection)
        command.upgrade(config, revision.revision)
        after = catalog.snapshot(connection)
        command.downgrade(config, previous)
        assert catalog.snapshot(connection) == before
        command.upgrade(config, revision.revision)
        assert catalog.snapshot(connection) == after
