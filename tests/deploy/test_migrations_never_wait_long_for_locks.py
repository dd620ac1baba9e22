"""A migration that needs a lock held by someone else (n8n's traffic queues behind our lock
request) gives up after lock_timeout instead of stalling the shared database, changes nothing,
and goes through once the blocker is gone. Offline SQL carries the same settings."""

import argparse

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import Engine, text

from media_db.deploy.project import VERSION_TABLE
from tests.helpers import alembic_config, environment, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def test_upgrade_blocked_by_a_lock_times_out_and_changes_nothing(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
    blocker = engine.connect()
    blocker_pid = blocker.scalar(text("SELECT pg_backend_pid()"))
    blocker.execute(text("LOCK TABLE media_items IN ACCESS SHARE MODE"))  # a long reader
    try:
        with engine.connect() as connection:
            config = alembic_config(connection)
            config.cmd_opts = argparse.Namespace(
                x=["lock_timeout=300ms", "lock-retries=1", "lock-retry-backoff=100ms"]
            )
            with pytest.raises(CommandError) as refused:
                command.upgrade(config, "head")
            message = str(refused.value)
            assert message.startswith(
                "upgrade 0001 -> 0002 failed: gave up after 2 attempts, lock_timeout each time"
            )
            assert f"pid {blocker_pid} (" in message
            assert "LOCK TABLE media_items IN ACCESS SHARE MODE" in message
            assert "the database is at revision 0001; left behind: nothing;" in message
            connection.rollback()
            assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == "0001"
            assert connection.scalar(text("SHOW lock_timeout")) == "0", "session settings reset"
    finally:
        blocker.close()
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0002")
        assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == "0002"


def test_offline_sql_sets_the_same_timeouts() -> None:
    result = run(
        ["alembic", "-x", "statement_timeout=2min", "upgrade", "head", "--sql"],
        environment(MIGRATION_LOCK_TIMEOUT="3s"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.lstrip().startswith(
        "SET lock_timeout = '3s';\n\nSET statement_timeout = '2min';"
    )


def test_a_malformed_timeout_is_refused_before_anything_runs() -> None:
    result = run(
        ["alembic", "-x", "lock_timeout=5s; DROP TABLE x", "upgrade", "head", "--sql"],
        environment(),
    )
    assert result.returncode != 0
    assert "lock_timeout='5s; DROP TABLE x' refused" in result.stdout + result.stderr
    assert "DROP TABLE" not in result.stdout.replace("lock_timeout='5s; DROP TABLE x'", "")
