"""A password given as `?password=` in DATABASE_URL is the password everywhere: it connects,
never shows, and never reaches psql's command line; psql opens a database whose name has spaces;
progress reports cannot be asked for at a rate that floods the log."""

from collections.abc import Iterator

import pytest
from alembic.util import CommandError
from sqlalchemy import URL, make_url

from media_db import settings
from media_db.deploy import options
from media_db.dev.embedded import LocalServer
from media_db.errors import DatabaseNotConfigured
from media_db.pool import conninfo
from tests.deploy.test_secrets_never_printed import assert_no_secret, role_owning_database
from tests.helpers import environment, run

PASSWORD = "q@ery:pw/rd%41 'x'"
ROLE = "media_query_password"
SPACED = "media analysis two words"
# psql's own argv, read from its shell escape: what `ps` would show of it.
PSQL_ARGV = "\\! tr '\\0' ' ' < /proc/$PPID/cmdline; echo\n"


@pytest.fixture(scope="module")
def role_database(password_server: LocalServer) -> Iterator[URL]:
    """A role with a password, owning a database whose name holds spaces, on the scram server."""
    with role_owning_database(password_server, ROLE, PASSWORD, SPACED) as url:
        yield url


def query_password_url(url: URL) -> str:
    """DATABASE_URL with the password as a query parameter, as libpq accepts it."""
    without = URL.create(
        "postgresql", username=url.username, host=url.host, port=url.port, database=url.database
    )
    return without.update_query_dict({"password": str(url.password)}).render_as_string(
        hide_password=False
    )


def test_a_query_password_connects_everywhere_and_never_shows(role_database: URL) -> None:
    env = environment(DATABASE_URL=query_password_url(role_database))
    for target in (["db-check"], ["db-url"], ["upgrade"], ["current"], ["status"]):
        result = run(["make", *target], env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"make {target[0]}:\n{output}"
        assert "Traceback" not in output
        assert_no_secret(output)
        assert PASSWORD not in output
    url = settings.database_url(env)
    assert url.password == PASSWORD
    assert "password" not in url.query
    assert PASSWORD not in settings.redacted(url)


def test_a_password_given_twice_differently_is_refused_in_one_line() -> None:
    raw = "postgresql://u:one@h/d?password=two"
    with pytest.raises(DatabaseNotConfigured, match="password twice") as refused:
        settings.database_url({"DATABASE_URL": raw})
    assert "one" not in str(refused.value).replace("one place", "")
    assert "two" not in str(refused.value).replace("twice", "")


def test_conninfo_never_gets_a_parameter_twice() -> None:
    url = make_url("postgresql+psycopg://u@h:5432/d?password=secret&sslmode=disable")
    assert "password=secret" in conninfo(url)
    assert "sslmode=disable" in conninfo(url)


def test_psql_gets_no_password_on_its_command_line_and_opens_a_spaced_name(
    role_database: URL,
) -> None:
    for env in (
        environment(DATABASE_URL=query_password_url(role_database)),
        environment(role_database),
        environment(
            POSTGRES_HOST=str(role_database.host),
            POSTGRES_PORT=str(role_database.port),
            POSTGRES_DB=SPACED,
            POSTGRES_USER=ROLE,
            POSTGRES_PASSWORD=PASSWORD,
        ),
    ):
        session = run(["make", "psql"], env, stdin=f"SELECT current_database();\n{PSQL_ARGV}")
        assert session.returncode == 0, session.stdout + session.stderr
        assert SPACED in session.stdout, session.stdout + session.stderr
        argv = next(line for line in session.stdout.splitlines() if "psql" in line)
        assert "password=" not in argv, argv
        assert_no_secret(session.stdout + session.stderr)


def test_progress_interval_has_a_floor_and_zero_still_means_off() -> None:
    for too_often in ("1ms", "100ms", "499ms"):
        with pytest.raises(CommandError, match=r"0 \(off\) or .*from 500ms"):
            options.options({"progress-interval": too_often}, {})
    assert options.options({"progress-interval": "0"}, {})["progress_interval"] == 0
    assert options.options({"progress-interval": "500ms"}, {})["progress_interval"] == 0.5
    assert options.options({}, {})["progress_interval"] == 5
