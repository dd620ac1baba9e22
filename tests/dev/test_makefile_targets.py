"""The Makefile: help by default listing every target, an idempotent install, and the embedded
PostgreSQL used (and said to be used) when no database is configured, kept between calls."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import URL, create_engine, pool, text

from media_db.dev.embedded import LocalServer
from tests.helpers import (
    HEAD,
    NEXT_REVISION,
    REPO_ROOT,
    alembic_config,
    environment,
    project_copy,
    run,
)

TARGETS = re.findall(r"^([a-z-]+):.*## ", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)


def test_help_is_the_default_and_lists_every_target() -> None:
    result = run(["make"], environment())
    assert result.returncode == 0
    listed = re.findall(r"^  make (\S+)", result.stdout, re.MULTILINE)
    assert listed == TARGETS
    assert {
        "install",
        "upgrade",
        "downgrade",
        "current",
        "history",
        "verify",
        "sql",
        "revision",
        "db-check",
        "test",
        "lint",
        "db-start",
        "db-stop",
    } <= set(listed)


def test_install_is_idempotent() -> None:
    result = run(["make", "install"], environment())
    assert result.returncode == 0
    assert "uv sync" not in result.stdout  # nothing to rebuild: the lock has not changed


@pytest.fixture
def embedded_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "postgres"
    yield home
    LocalServer(home=home).destroy()


def test_no_database_configured_uses_embedded_and_keeps_it(embedded_home: Path) -> None:
    env = environment(MEDIA_DB_LOCAL_HOME=str(embedded_home))
    first = run(["make", "db-check"], env)
    assert first.returncode == 0, first.stderr
    assert "No database configured: using the embedded PostgreSQL" in first.stderr
    assert "Database connection successful" in first.stdout
    port = LocalServer(home=embedded_home).running_port()
    assert port is not None

    upgraded = run(["make", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"Database at revision {HEAD} (head)" in upgraded.stderr
    assert LocalServer(home=embedded_home).running_port() == port  # same server, still up

    assert run(["make", "db-stop"], env).returncode == 0
    assert LocalServer(home=embedded_home).running_port() is None


@pytest.mark.parametrize("target", ["db-url", "psql"])
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2@h:port/db",
        "postgresql://u:hun@ter2@h/db",
        "mysql://u:hunter2@h/db",
    ],
)
def test_a_malformed_url_is_one_line_of_ours(target: str, url: str) -> None:
    result = run(["make", target], environment(DATABASE_URL=url))
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert result.returncode != 0
    assert len(ours) == 1, result.stderr
    assert "DATABASE_URL" in ours[0]
    assert "hunter2" not in result.stdout + result.stderr


def test_verify_on_drift_shows_the_readable_comparison_first(migrated: URL) -> None:
    with create_engine(migrated, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text("ALTER TABLE media_items ADD COLUMN stray text"))
    result = run(["make", "verify"], environment(migrated))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    readable = output.index("Schema verification failed: the live schema differs")
    assert "media_items column stray" in output[readable:], output
    repr_at = output.find("New upgrade operations detected")
    assert repr_at == -1 or repr_at > readable, output


def test_history_is_one_line_per_revision_unless_verbose() -> None:
    revisions = list(ScriptDirectory.from_config(alembic_config()).walk_revisions())
    short = run(["make", "history"], environment())
    assert short.returncode == 0, short.stderr
    listed = [line for line in short.stdout.splitlines() if " -> " in line]
    assert len(listed) == len(revisions) == len(short.stdout.splitlines()) - 1  # + the command
    verbose = run(["make", "history", "VERBOSE=1"], environment())
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout.count("Revision ID:") == len(revisions)


def test_revision_prints_no_finding_the_formatter_fixes(tmp_path: Path, migrated: URL) -> None:
    """ruff's fix runs before its formatter: a long line it would report is fixed next."""
    project = project_copy(tmp_path)
    models = project / "models" / "media.py"
    long_name = "thumbnail_path_of_a_name_long_enough_to_overflow_the_line_length"
    models.write_text(
        models.read_text()
        + "\nfrom sqlalchemy import Column\n\n"
        + f'MediaItem.__table__.append_column(Column("{long_name}", String(500)))\n'
    )
    made = run(["make", "revision", "M=add a long column"], environment(migrated), cwd=project)
    output = made.stdout + made.stderr
    assert made.returncode == 0, output
    assert "E501" not in output, output
    [revision] = (project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*.py")
    assert long_name in revision.read_text()
    linted = run(["ruff", "check", "--quiet", str(revision)], environment(), cwd=project)
    assert linted.returncode == 0, linted.stdout
