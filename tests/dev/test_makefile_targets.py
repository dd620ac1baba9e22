"""The Makefile: help by default listing every target, an idempotent install, and the embedded
PostgreSQL used (and said to be used) when no database is configured, kept between calls."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from media_db.dev.embedded import LocalServer
from tests.helpers import HEAD, REPO_ROOT, environment, run

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
