"""A server without core gen_random_uuid() (PostgreSQL < 13) is refused before anything changes,
online (env.py) and in offline SQL (the revision's own guard). Real servers here are all newer,
so the tests raise the bar instead of lowering the server."""

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from media_db.deploy import catalog, project
from tests.helpers import alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def test_env_refuses_a_server_below_the_minimum(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(project, "OLDEST_MAJOR", 99)
    with engine.connect() as connection:
        with pytest.raises(CommandError, match=r"PostgreSQL 99 or newer is required.*Nothing"):
            command.upgrade(alembic_config(connection), "head")
        assert catalog.snapshot(connection) == {}


def test_revision_guard_stops_psql_scripts_on_old_servers(engine: Engine) -> None:
    revision = ScriptDirectory.from_config(alembic_config()).get_revision("0001")
    guard = revision.module.require_server_version_sql
    with engine.connect() as connection:
        connection.execute(text(guard()))  # this server is new enough: passes
        with pytest.raises(DBAPIError, match="needs PostgreSQL 13 or newer"):
            connection.execute(text(guard(minimum=9_999_999)))
