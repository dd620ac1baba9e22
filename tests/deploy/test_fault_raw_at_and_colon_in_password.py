"""Fault: a password with a raw `@` (then `:`) pasted into DATABASE_URL unencoded. Every entry
point refuses in one line saying how to fix it, and shows no part of the password (the parser
used to read its tail as host or port and print it). Encoded, the same password works."""

import re
from collections.abc import Iterator

import pytest
from psycopg import sql
from sqlalchemy import URL, create_engine, pool

from media_db.dev.embedded import LocalServer
from tests.faults import assert_recovers, seed_rows
from tests.helpers import environment, run

ROLE = "raw_password_app"
PASSWORDS = {
    "at-then-colon": ("ab@cd:correcthorse", ["cd:correct", "correcthorse", "ab@cd"]),
    "at-alone": ("hunter@battery", ["battery", "hunter"]),
}
ENTRY_POINTS = {
    "alembic": ["alembic", "upgrade", "head"],
    "check": ["python", "-m", "media_db.deploy.check"],
    "make db-check": ["make", "db-check"],
    "make verify": ["make", "verify"],
}


@pytest.fixture(scope="module")
def database(password_server: LocalServer) -> Iterator[URL]:
    admin = create_engine(
        password_server.url("postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        raw.execute(sql.SQL("CREATE DATABASE raw_password OWNER {}").format(sql.Identifier(ROLE)))
    yield password_server.url("raw_password").set(username=ROLE)
    with admin.connect() as connection:
        connection.exec_driver_sql("DROP DATABASE raw_password WITH (FORCE)")
        connection.exec_driver_sql(f"DROP ROLE {ROLE}")


def set_password(url: URL, password: str) -> URL:
    admin = url.set(username="postgres", database="postgres")
    engine = create_engine(admin, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(password))
        )
    return url.set(password=password)


@pytest.mark.parametrize("password_case", PASSWORDS)
def test_raw_password_is_refused_without_showing_it(
    database: URL, password_server: LocalServer, password_case: str
) -> None:
    password, fragments = PASSWORDS[password_case]
    url = set_password(database.set(password=password_server.superuser_password), password)
    raw = f"postgresql://{ROLE}:{password}@{url.host}:{url.port}/{url.database}"
    for name, command in ENTRY_POINTS.items():
        result = run(command, environment(DATABASE_URL=raw))
        output = result.stdout + result.stderr
        # make echoes its recipe and adds its own "Error" line; the rest is the one message.
        lines = [
            line
            for line in output.splitlines()
            if line.strip()
            and not re.match(r"make(\[\d+\])?: \*\*\*", line)
            and not line.startswith("python -m media_db")
        ]
        assert result.returncode != 0, f"{name}: {output}"
        assert len(lines) == 1, f"{name}: {lines}"
        assert "percent-encode" in lines[0], lines[0]
        assert "POSTGRES_PASSWORD" in lines[0]
        for fragment in fragments:
            assert fragment not in output, f"{name} showed {fragment!r}"

    assert run(["alembic", "upgrade", "head"], environment(url)).returncode == 0
    rows = seed_rows(url)
    assert_recovers(url, rows)  # the same password, percent-encoded
    assert (
        run(["alembic", "downgrade", "base"], environment(url, ALLOW_DATA_LOSS="1")).returncode == 0
    )
