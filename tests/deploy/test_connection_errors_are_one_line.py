"""Unreachable, refused or unconfigured: one clear line, a non-zero exit, no traceback wall,
and the database untouched."""

import socket

import pytest
from sqlalchemy import URL

from media_db.dev.embedded import LocalServer
from media_db.errors import EXIT_UNAVAILABLE
from tests.helpers import environment, run


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


def wrong_password(server: LocalServer) -> URL:
    return server.url("postgres").set(password="not-the-password")


def unreachable(_: LocalServer) -> URL:
    return URL.create(
        "postgresql+psycopg",
        username="n8n",
        password="secret-pw",
        host="127.0.0.1",
        port=closed_port(),
        database="af-memory",
    )


@pytest.mark.parametrize(
    ("make_url", "reason"),
    [(wrong_password, "password authentication failed"), (unreachable, "Connection refused")],
    ids=["wrong-password", "unreachable"],
)
@pytest.mark.parametrize(
    "command",
    [
        ["alembic", "upgrade", "head"],
        ["python", "-m", "media_db.deploy.check"],
        ["python", "-m", "media_db.deploy.verify"],
        ["python", "-m", "media_db.deploy.status"],
        ["python", "-m", "media_db.deploy.adopt"],
        ["python", "-m", "media_db.deploy.backup", "restore", "/nonexistent-backup"],
    ],
    ids=["alembic", "db-check", "verify", "status", "adopt", "restore"],
)
def test_failure_is_one_clear_line(
    password_server: LocalServer, make_url: object, reason: str, command: list[str]
) -> None:
    url = make_url(password_server)  # type: ignore[operator]
    result = run(command, environment(url))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # alembic has one exit status for every failure (255); ours say "unavailable" alike.
    assert result.returncode == (255 if command[0] == "alembic" else EXIT_UNAVAILABLE)
    assert len(lines) == 1, lines
    assert reason in lines[0]
    assert f"{url.host}:{url.port}" in lines[0]
    assert "Traceback" not in lines[0]
    assert url.password not in lines[0]


def test_nothing_configured_names_the_variables() -> None:
    result = run(["alembic", "upgrade", "head"], environment())
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert lines == [
        "FAILED: No database configured: set DATABASE_URL (postgresql://user:password@host:port"
        "/dbname, password percent-encoded) or POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, "
        "POSTGRES_USER, POSTGRES_PASSWORD."
    ]


def test_make_db_check_fails_cleanly(password_server: LocalServer) -> None:
    result = run(["make", "db-check"], environment(wrong_password(password_server)))
    assert result.returncode != 0
    assert "Database connection failed: Cannot connect to" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
