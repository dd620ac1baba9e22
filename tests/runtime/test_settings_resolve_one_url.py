"""media_db.settings: one URL for env.py, the tools and the app, from DATABASE_URL or POSTGRES_*,
never built by string formatting, never falling back silently."""

import asyncio
import socket
import subprocess
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from media_db.pool import Database, PoolSize, conninfo
from media_db.settings import (
    DatabaseNotConfigured,
    database_url,
    direct_url,
    is_configured,
    libpq_uri,
    pooler,
    redacted,
)
from tests.servers import DatabaseServer

NASTY = "p@ss:w/rd%#? with spaces"


def test_database_url_wins_and_is_pointed_at_psycopg3() -> None:
    url = database_url(
        {"DATABASE_URL": "postgres://app:pw@db.internal:6543/media", "POSTGRES_HOST": "ignored"}
    )
    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+psycopg",
        "db.internal",
        6543,
        "media",
    )


def test_parts_take_the_plans_defaults_but_never_a_password() -> None:
    url = database_url({"POSTGRES_HOST": "af-postgres-1"})
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "af-postgres-1",
        5432,
        "af-memory",
        "n8n",
        None,
    )


def test_any_postgres_variable_counts_as_configured() -> None:
    assert not is_configured({})
    assert is_configured({"POSTGRES_PASSWORD": "x"})
    assert database_url({"POSTGRES_PASSWORD": "x"}).host == "af-postgres-1"


def test_special_password_survives_and_is_redacted() -> None:
    url = database_url({"POSTGRES_HOST": "h", "POSTGRES_PASSWORD": NASTY})
    assert url.password == NASTY
    assert NASTY not in redacted(url)
    assert "***" in redacted(url)
    encoded = url.render_as_string(hide_password=False)
    assert database_url({"DATABASE_URL": encoded}).password == NASTY


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "No database configured: set DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u:hunter2@h/db"}, "this project speaks PostgreSQL"),
        ({"DATABASE_URL": "postgresql+asyncpg://u:hunter2@h/db"}, "this project speaks"),
        ({"DATABASE_URL": "postgresql://u:hunter2@h:5432"}, "names no database"),
        ({"DATABASE_URL": "not a url hunter2"}, "DATABASE_URL is not a valid URL"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "54a2"}, "POSTGRES_PORT must be a TCP port"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "70000"}, "POSTGRES_PORT must be a TCP port"),
        # ASCII digits only: Arabic-Indic, fullwidth, superscript (which made int() raise).
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "\u0665\u0664\u0663\u0662"}, "POSTGRES_PORT must"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "\uff15\uff14\uff13\uff12"}, "POSTGRES_PORT must"),
        ({"POSTGRES_HOST": "h", "POSTGRES_PORT": "\u00b2"}, "POSTGRES_PORT must be a TCP port"),
    ],
)
def test_misconfiguration_says_what_and_hides_the_password(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(DatabaseNotConfigured, match=message) as raised:
        database_url(environ)
    assert "hunter2" not in str(raised.value)


def test_the_direct_url_is_the_database_url_unless_given() -> None:
    plain = {"DATABASE_URL": "postgresql://app:pw@pgbouncer:6432/media"}
    assert direct_url(plain) == database_url(plain)
    given = {
        **plain,
        "DIRECT_DATABASE_URL": f"postgresql://app:{quote(NASTY, safe='')}@db:5432/media",
    }
    direct = direct_url(given)
    assert (direct.host, direct.port, direct.password) == ("db", 5432, NASTY)
    assert database_url(given).host == "pgbouncer"
    parts = {"POSTGRES_HOST": "pgbouncer", "POSTGRES_PORT": "6432", "POSTGRES_PASSWORD": NASTY}
    split = direct_url({**parts, "POSTGRES_DIRECT_HOST": "db", "POSTGRES_DIRECT_PORT": "5432"})
    assert (split.host, split.port, split.password, split.database) == (
        "db",
        5432,
        NASTY,
        "af-memory",
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DIRECT_DATABASE_URL": "postgresql://u:hunter2@db/media"}, "set DATABASE_URL too"),
        (
            {"DATABASE_URL": "postgresql://u:hunter2@p/m", "DIRECT_DATABASE_URL": "x hunter2"},
            "DIRECT_DATABASE_URL is not a valid URL",
        ),
        (
            {"DATABASE_URL": "postgresql://u:hunter2@p/m", "POSTGRES_DIRECT_HOST": "db"},
            "with DATABASE_URL, set DIRECT_DATABASE_URL instead",
        ),
        (
            {"POSTGRES_PASSWORD": "hunter2", "POSTGRES_DIRECT_PORT": "x"},
            "POSTGRES_PORT must be a TCP port",
        ),
    ],
)
def test_a_misconfigured_direct_url_says_what_and_hides_the_password(
    environ: dict[str, str], message: str
) -> None:
    assert is_configured(environ)  # never the embedded server in place of half a configuration
    with pytest.raises(DatabaseNotConfigured, match=message) as raised:
        direct_url(environ)
    assert "hunter2" not in str(raised.value)


def test_the_pooler_mode_is_checked() -> None:
    assert pooler({}) is None
    assert pooler({"POSTGRES_POOLER": "transaction"}) == "transaction"
    with pytest.raises(DatabaseNotConfigured, match="use transaction or session"):
        pooler({"POSTGRES_POOLER": "statement"})


def test_a_multi_host_url_is_taken_and_masked() -> None:
    """The form HA set-ups hand out (`pg_autoctl show uri`, Patroni): several host:port pairs
    and libpq's query parameters, reaching libpq as its comma lists."""
    password = quote(NASTY, safe="")
    raw = f"postgresql://app:{password}@h1:5432,h2:6432/media?target_session_attrs=read-write"
    url = database_url({"DATABASE_URL": raw})
    assert url.password == NASTY
    shown = redacted(url)
    assert NASTY not in shown
    assert quote(NASTY, safe="") not in shown
    assert "h1" in shown
    assert "h2" in shown
    options = conninfo_to_dict(conninfo(url))
    assert (options["host"], options["port"]) == ("h1,h2", "5432,6432")
    assert options["target_session_attrs"] == "read-write"
    assert options["password"] == NASTY


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        ("postgresql://u@[::1]:5432,[::1]:5433/db", "::1,::1", "5432,5433"),
        ("postgresql://u@127.0.0.1,[::1]/db", "127.0.0.1,::1", None),
        ("postgresql://u@h1,h2/db?port=7000", "h1,h2", "7000"),  # the URL's own port stands
    ],
)
def test_ipv6_hosts_and_a_query_port_reach_libpq_as_it_reads_them(
    raw: str, host: str, port: str | None
) -> None:
    options = conninfo_to_dict(conninfo(database_url({"DATABASE_URL": raw})))
    assert (options["host"], options.get("port")) == (host, port)


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:hunter2@h1:54x2,h2:5432/db",
        "postgresql://u:hunter2@,h2:5432/db",
        "postgresql://u:hunter2@h1 ,h2/db",
    ],
)
def test_a_malformed_multi_host_url_is_refused_without_the_password(raw: str) -> None:
    with pytest.raises(DatabaseNotConfigured, match="not a valid URL") as refused:
        database_url({"DATABASE_URL": raw})
    assert "hunter2" not in str(refused.value)


def test_the_pool_reaches_the_first_host_that_answers(server: DatabaseServer) -> None:
    """A host that is down first in the list: libpq tries the next, as after a failover."""
    admin = server.admin_url
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]  # nobody listens once it is closed
    password = quote(admin.password or "", safe="")
    raw = (
        f"postgresql://{admin.username}:{password}@127.0.0.1:{dead},{admin.host}:{admin.port}"
        f"/{admin.database}?target_session_attrs=read-write"
    )

    async def reached() -> int:
        async with (
            await Database.connect(database_url({"DATABASE_URL": raw}), PoolSize(1, 2)) as db,
            db.connection() as connection,
        ):
            cursor = await connection.execute("SELECT 1 AS one")
            row = await cursor.fetchone()
            return int(row["one"]) if row else 0

    assert asyncio.run(reached()) == 1


def test_a_multi_host_url_is_given_back_in_libpqs_own_form_which_psql_takes(
    server: DatabaseServer,
) -> None:
    """What `make db-url` prints: psql would read SQLAlchemy's `?host=h1:5432&host=...` as one
    host named `h1:5432`."""
    admin = server.admin_url
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    password = quote(admin.password or "", safe="")
    login = f"{admin.username}:{password}@" if admin.password else f"{admin.username}@"
    raw = (
        f"postgresql://{login}127.0.0.1:{dead},{admin.host}:{admin.port}"
        f"/{admin.database}?target_session_attrs=read-write"
    )
    given_back = libpq_uri(database_url({"DATABASE_URL": raw}))
    assert given_back == raw
    psql = subprocess.run(
        ["psql", given_back, "-Atc", "SELECT 1"], capture_output=True, text=True, check=False
    )
    assert (psql.returncode, psql.stdout.strip()) == (0, "1"), psql.stderr
