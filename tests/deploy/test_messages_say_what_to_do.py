"""What the tools print is something a person can act on: one revision line for `make current`,
no plugin chatter, an unknown revision pointing at `make history`, a database behind head
pointing at `make upgrade`, aligned help, and an embedded server whose URL (printed without a
password) survives a restart, and a FAILED line whose next command works under make's embedded
server."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic_utils.pg_function import PGFunction
from sqlalchemy import URL, create_engine, pool, text

from media_db.dev.embedded import LocalServer
from media_db.models import Base
from media_db.models.triggers import ENTITIES
from tests.conftest import FreshDatabase
from tests.helpers import HEAD, environment, run


def test_current_prints_the_revision_once_without_plugin_chatter(migrated: URL) -> None:
    done = run(["make", "current"], environment(migrated))
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert both.count(HEAD) == 1, both
    checked = run(["alembic", "check"], environment(migrated))
    assert checked.returncode == 0, checked.stderr
    assert "setting up autogenerate plugin" not in checked.stderr


def test_unknown_revision_names_make_history(migrated: URL) -> None:
    done = run(["make", "downgrade", "REV=0099"], environment(migrated))
    assert done.returncode != 0
    assert "Can't locate revision identified by '0099': `make history` lists" in done.stdout


def test_database_behind_head_says_to_upgrade_first(fresh_database: FreshDatabase) -> None:
    done = run(["alembic", "check"], environment(fresh_database()))
    assert done.returncode != 0
    assert "Target database is not up to date: the database is behind head: run `make upgrade`" in (
        done.stdout
    )


def test_help_columns_are_aligned() -> None:
    lines = run(["make"], environment()).stdout.splitlines()
    starts = {re.match(r"  make \S+\s+", line).end() for line in lines}  # type: ignore[union-attr]
    assert len(starts) == 1, lines


@pytest.fixture
def embedded_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "postgres"
    yield home
    LocalServer(home=home).destroy()


def test_embedded_url_is_printed_without_password_and_kept_across_restarts(
    embedded_home: Path,
) -> None:
    env = environment(MEDIA_DB_LOCAL_HOME=str(embedded_home))
    first = run(["make", "db-url"], env)
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    assert re.fullmatch(r"postgresql://postgres@127\.0\.0\.1:\d+/media_analysis", url)
    assert run(["make", "db-stop"], env).returncode == 0
    assert run(["make", "db-url"], env).stdout.strip() == url
    session = run(["make", "psql"], env, stdin="SELECT 'psql ' || 'works';\n")
    assert "psql works" in session.stdout


FUNCTIONS = [entity for entity in ENTITIES if isinstance(entity, PGFunction)]


def test_a_failure_under_makes_embedded_server_names_a_next_command_that_works_there(
    embedded_home: Path,
) -> None:
    """With no database configured, make runs alembic against its embedded server: the FAILED
    line's next command must work where the user is (plain `alembic` would find no database)."""
    env = environment(MEDIA_DB_LOCAL_HOME=str(embedded_home))
    assert run(["make", "upgrade"], env).returncode == 0
    url = LocalServer(home=embedded_home).url()
    blocker = create_engine(url, poolclass=pool.NullPool).connect()
    # Whatever the last revision's way down changes, our tables or our functions, waits.
    blocker.execute(text(f"LOCK TABLE {', '.join(Base.metadata.tables)} IN ACCESS SHARE MODE"))
    for function in FUNCTIONS:  # an open update of its catalog row: a REPLACE waits for it
        blocker.execute(text(f"ALTER FUNCTION {function.signature} COST 100"))
    try:
        failed = run(
            ["make", "downgrade", "REV=-1"],
            {**env, "MIGRATION_LOCK_TIMEOUT": "100ms", "MIGRATION_LOCK_RETRIES": "0"},
        )
    finally:
        blocker.rollback()
        blocker.close()
    assert failed.returncode != 0
    [line] = [line for line in failed.stdout.splitlines() if line.startswith("FAILED")]
    found = re.search(r"next: once the cause is dealt with, run `(.+)` again\.$", line)
    assert found, line
    # Outside make: the checkout's alembic, the embedded server's URL, and the options this
    # run took from the environment, so the command runs as printed.
    assert "MIGRATION_LOCK_TIMEOUT=100ms MIGRATION_LOCK_RETRIES=0 " in found[1], line
    assert "DATABASE_URL=$(make -s db-url) .venv/bin/alembic " in found[1], line
    again = run(["bash", "-c", found[1]], env)
    assert again.returncode == 0, again.stdout + again.stderr
