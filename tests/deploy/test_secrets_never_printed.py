"""A password full of URL metacharacters works end to end and never shows in any output:
every Makefile database target, the alembic CLI, and offline SQL."""

import contextlib
import urllib.parse
from collections.abc import Iterator

import pytest
from psycopg import sql
from sqlalchemy import URL, create_engine, pool

from media_db.dev.embedded import LocalServer
from media_db.settings import DRIVER
from tests.helpers import HEAD, environment, run

PASSWORD = "p@ss:w/rd%41#frag?x=1&y 'two words' \\end"
ROLE = "media_app"


@contextlib.contextmanager
def role_owning_database(
    server: LocalServer, role: str, password: str, database: str
) -> Iterator[URL]:
    """A role with `password`, owning `database` of its own on `server`; both dropped after."""
    admin = create_engine(
        server.url("postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    names = {"role": sql.Identifier(role), "database": sql.Identifier(database)}
    with admin.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute(
            sql.SQL("CREATE ROLE {role} LOGIN PASSWORD {password}").format(
                **names, password=sql.Literal(password)
            )
        )
        raw.execute(sql.SQL("CREATE DATABASE {database} OWNER {role}").format(**names))
    try:
        yield server.url(database).set(username=role, password=password)
    finally:
        with admin.connect() as connection:
            raw = connection.connection.dbapi_connection
            assert raw is not None
            raw.execute(sql.SQL("DROP DATABASE {database} WITH (FORCE)").format(**names))
            raw.execute(sql.SQL("DROP ROLE {role}").format(**names))


@pytest.fixture(scope="module")
def app_database(password_server: LocalServer) -> Iterator[URL]:
    """A role with the nasty password, owning a database of its own on the scram server."""
    with role_owning_database(password_server, ROLE, PASSWORD, "media_secret") as url:
        yield url


def assert_no_secret(output: str) -> None:
    for form in (
        PASSWORD,
        urllib.parse.quote(PASSWORD, safe=""),
        urllib.parse.quote(PASSWORD),
        urllib.parse.quote_plus(PASSWORD),
        "p@ss",
        "w/rd%41",
    ):
        assert form not in output, f"the password leaked (as {form!r})"


def parts_environment(url: URL) -> dict[str, str]:
    return environment(
        POSTGRES_HOST=str(url.host),
        POSTGRES_PORT=str(url.port),
        POSTGRES_DB=str(url.database),
        POSTGRES_USER=ROLE,
        POSTGRES_PASSWORD=PASSWORD,
    )


TARGETS = [
    "upgrade",
    "current",
    "history",
    "verify",
    "db-check",
    "db-url",
    "status",
    "sql",
    "downgrade REV=base",
]


def test_every_make_target_works_and_hides_the_password(app_database: URL) -> None:
    env = parts_environment(app_database)
    outputs = {}
    for target in TARGETS:
        result = run(["make", *target.split()], env)
        outputs[target] = result.stdout + result.stderr
        assert result.returncode == 0, f"make {target}:\n{outputs[target]}"
        assert_no_secret(outputs[target])
    assert f"Database at revision {HEAD} (head)" in outputs["upgrade"]
    assert f"{HEAD} (head)" in outputs["current"]
    assert "Database connection successful" in outputs["db-check"]
    assert (
        outputs["db-url"]
        .strip()
        .endswith(f"{ROLE}@{app_database.host}:{app_database.port}/{app_database.database}")
    )
    assert "Live schema matches the models" in outputs["verify"]
    assert "Database at revision base" in outputs["downgrade REV=base"]


def test_percent_encoded_database_url_works_and_hides_the_password(app_database: URL) -> None:
    assert app_database.drivername == DRIVER
    env = environment(app_database)  # rendered by SQLAlchemy: password percent-encoded
    for args in (
        ["alembic", "downgrade", "base"],
        ["alembic", "upgrade", "head"],
        ["alembic", "current"],
        ["python", "-m", "media_db.deploy.check"],
    ):
        result = run(args, env)
        assert result.returncode == 0, result.stderr
        assert_no_secret(result.stdout + result.stderr)


def test_offline_sql_carries_no_connection_details(app_database: URL) -> None:
    result = run(["alembic", "upgrade", "head", "--sql"], parts_environment(app_database))
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE media_items" in result.stdout
    assert_no_secret(result.stdout + result.stderr)
    assert ROLE not in result.stdout
    assert str(app_database.port) not in result.stdout


def test_direct_database_url_works_and_hides_the_password_like_database_url(
    app_database: URL,
) -> None:
    # DATABASE_URL names a server that is not there: only the direct URL can do the work.
    elsewhere = app_database.set(port=1)
    env = environment(
        elsewhere, DIRECT_DATABASE_URL=app_database.render_as_string(hide_password=False)
    )
    for args in (
        ["alembic", "downgrade", "base"],
        ["alembic", "upgrade", "head"],
        ["python", "-m", "media_db.deploy.verify"],
        ["python", "-m", "media_db.deploy.status"],
    ):
        result = run(args, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_no_secret(result.stdout + result.stderr)
    unreachable = environment(
        app_database, DIRECT_DATABASE_URL=elsewhere.render_as_string(hide_password=False)
    )
    for args in (["alembic", "current"], ["python", "-m", "media_db.deploy.status"]):
        failed = run(args, unreachable)
        assert failed.returncode != 0
        assert "Cannot connect to" in failed.stdout + failed.stderr
        assert_no_secret(failed.stdout + failed.stderr)
