"""Where the database is: the one place that turns the environment into a SQLAlchemy URL.

Used by alembic/env.py, the Makefile helpers, the tests and the application alike.

Order: `DATABASE_URL` if set; otherwise the `POSTGRES_*` variables, with the seed plan's defaults
for everything but the password. With none of them set there is no silent fallback: the caller
gets `DatabaseNotConfigured`, naming the variables.

Behind a pooler (PgBouncer), `DATABASE_URL` names the pooler and `DIRECT_DATABASE_URL` (or, with
the split form, `POSTGRES_DIRECT_HOST` / `POSTGRES_DIRECT_PORT`) a session connection to the
same database: migrations, their lock, verify, status, adopt, restore and the workers' LISTEN
need one session from start to end, which a transaction pooler does not give. Unset, the direct
URL is `DATABASE_URL`'s. `POSTGRES_POOLER=transaction` tells the data layer that `DATABASE_URL`
is a transaction pooler: no prepared statements, and LISTEN only over the direct URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

__all__ = [
    "DatabaseNotConfigured",
    "database_url",
    "direct_url",
    "has_direct_url",
    "is_configured",
    "libpq_uri",
    "pooler",
    "redacted",
]

from media_db.errors import DatabaseNotConfigured

if TYPE_CHECKING:
    from sqlalchemy import URL

# SQLAlchemy is imported inside the functions that build URLs: `make` asks `is_configured` on
# every database target, and importing SQLAlchemy costs over a second on a small machine.

DRIVER = "postgresql+psycopg"
# The database is shared with n8n: operators must be able to tell our sessions apart.
APPLICATION_NAME = "media-analysis"

PLAN_DEFAULTS = {
    "POSTGRES_HOST": "af-postgres-1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_DB": "af-memory",
    "POSTGRES_USER": "n8n",
}
PART_VARIABLES = (*PLAN_DEFAULTS, "POSTGRES_PASSWORD")
# The split form's session endpoint: user, password and database are the pooler's.
DIRECT_PARTS = {"POSTGRES_DIRECT_HOST": "POSTGRES_HOST", "POSTGRES_DIRECT_PORT": "POSTGRES_PORT"}
POOLER_MODES = ("session", "transaction")
ACCEPTED_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}

# Set by `make` for the command it runs when it fell back to the embedded server.
EMBEDDED_FALLBACK = "MEDIA_DB_EMBEDDED_FALLBACK"
ENCODING = "@ as %40, : as %3A, / as %2F, % as %25"
HOW_TO_CONFIGURE = (
    "set DATABASE_URL (postgresql://user:password@host:port/dbname, password percent-encoded) "
    "or POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER, POSTGRES_PASSWORD"
)


def is_configured(environ: Mapping[str, str] = os.environ) -> bool:
    # A direct URL alone counts: the embedded server must not stand in for half a configuration.
    return _names_a_server(environ) or has_direct_url(environ)


def _names_a_server(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in ("DATABASE_URL", *PART_VARIABLES))


def database_url(environ: Mapping[str, str] = os.environ) -> URL:
    """The URL of our database, for psycopg 3. Never formats a password into a string."""
    if raw := environ.get("DATABASE_URL"):
        return _from_database_url(raw)
    if _names_a_server(environ):
        return _from_parts(environ)
    if has_direct_url(environ):
        raise DatabaseNotConfigured(
            "DIRECT_DATABASE_URL (or POSTGRES_DIRECT_*) is set but DATABASE_URL is not: the "
            "direct URL goes beside the one the application uses; set DATABASE_URL too."
        )
    raise DatabaseNotConfigured(f"No database configured: {HOW_TO_CONFIGURE}.")


def has_direct_url(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ("DIRECT_DATABASE_URL", *DIRECT_PARTS))


def direct_url(environ: Mapping[str, str] = os.environ) -> URL:
    """A session connection to our database (not through a transaction pooler): the one the
    deploy tools and LISTEN use. DIRECT_DATABASE_URL, else the split form with
    POSTGRES_DIRECT_HOST/PORT in place of POSTGRES_HOST/PORT, else database_url()."""
    application_url = database_url(environ)  # checked first: a direct URL goes beside it
    if raw := environ.get("DIRECT_DATABASE_URL"):
        return _from_database_url(raw, "DIRECT_DATABASE_URL")
    if not has_direct_url(environ):
        return application_url
    if environ.get("DATABASE_URL"):
        raise DatabaseNotConfigured(
            "POSTGRES_DIRECT_HOST/PORT go with the POSTGRES_* variables; with DATABASE_URL, "
            "set DIRECT_DATABASE_URL instead."
        )
    moved = {part: environ[name] for name, part in DIRECT_PARTS.items() if environ.get(name)}
    return _from_parts({**environ, **moved})


def pooler(environ: Mapping[str, str] = os.environ) -> str | None:
    """POSTGRES_POOLER: what DATABASE_URL points at, "transaction" or "session" (a PgBouncer
    pool_mode), or None (a server)."""
    mode = environ.get("POSTGRES_POOLER", "")
    if mode in ("", "none"):
        return None
    if mode not in POOLER_MODES:
        raise DatabaseNotConfigured(
            f"POSTGRES_POOLER={mode!r}: use transaction or session (PgBouncer's pool_mode), or "
            "leave it unset when DATABASE_URL points at the server itself."
        )
    return mode


def redacted(url: URL) -> str:
    """The URL as it may appear in logs and messages: password replaced by ***."""
    return url.render_as_string(hide_password=True)


def libpq_uri(url: URL) -> str:
    """`url` as libpq (psql) reads it, password and all: several hosts back in its own form
    (`h1:5432,h2:6432` in the authority), not SQLAlchemy's `?host=` list, which psql would
    take for one host named `h1:5432`."""
    hosts = url.query.get("host")
    if not isinstance(hosts, tuple):
        return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)
    user = quote(url.username or "", safe="")
    secret = f":{quote(url.password, safe='')}" if url.password is not None else ""
    rest = [(key, value) for key, value in url.query.items() if key != "host"]
    query = urlencode(
        [
            (key, item)
            for key, value in rest
            for item in (value if isinstance(value, tuple) else (value,))
        ]
    )
    at = f"{user}{secret}@" if user or secret else ""
    database = quote(url.database or "", safe="")
    return f"postgresql://{at}{','.join(hosts)}/{database}" + (f"?{query}" if query else "")


def _from_database_url(raw: str, name: str = "DATABASE_URL") -> URL:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    # A raw @ in the password ends it early: the rest would be read as host, port or database
    # and echoed by every later error. Refuse without showing any part of the URL.
    if raw.count("@") > 1:
        raise DatabaseNotConfigured(
            f"{name} holds more than one raw '@': percent-encode the user name and password "
            f"({ENCODING}), or set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER and "
            "POSTGRES_PASSWORD instead (the password raw)."
        )
    try:
        url = make_url(_hosts_into_query(raw))
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the string, password included: say it without it.
        raise DatabaseNotConfigured(
            f"{name} is not a valid URL; expected "
            "postgresql://user:password@host:port/dbname with a numeric port and special "
            f"characters in the password percent-encoded ({ENCODING})."
        ) from None
    if url.drivername not in ACCEPTED_SCHEMES:
        raise DatabaseNotConfigured(
            f"{name} uses {url.drivername!r}; this project speaks PostgreSQL through "
            f"psycopg 3: use postgresql:// (or {DRIVER}://)."
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise DatabaseNotConfigured(f"{name}'s port must be a TCP port number (1-65535).")
    if not url.database:
        raise DatabaseNotConfigured(f"{name} names no database: add /dbname to its end.")
    return _query_password_moved(url, name).set(drivername=DRIVER)


def _hosts_into_query(raw: str) -> str:
    """libpq's multi-host form, which HA set-ups hand out (`pg_autoctl show uri`, Patroni):
    `postgresql://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write`, in SQLAlchemy's own
    spelling of it (`u:p@/db?host=h1:5432&host=h2:5432&...`); any other URL as it is. A port
    that is not a number raises ValueError, refused like any malformed URL."""
    scheme, separator, rest = raw.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not separator or "," not in hosts:
        return raw
    listed = []
    for host in hosts.split(","):
        name, port = host_and_port(host)
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError("a host's port is not a TCP port number")
        if not name or name != name.strip():
            raise ValueError("an empty host in the list")
        listed.append(f"host={host}")
    path, _, query = tail.partition("?")
    query = "&".join([*listed, *([query] if query else [])])
    return f"{scheme}://{userinfo}{at}{slash or '/'}{path}?{query}"


def host_and_port(token: str) -> tuple[str, str]:
    """`h1:5432` -> ("h1", "5432"); `[::1]:5432` -> ("::1", "5432"); `[::1]`, `h1` and a bare
    IPv6 address -> the host and "" (no port)."""
    if token.startswith("[") and "]" in token:
        host, _, rest = token[1:].partition("]")
        return host, rest.removeprefix(":") if rest.startswith(":") else ""
    if token.count(":") == 1:
        host, _, port = token.partition(":")
        return host, port
    return token, ""


def _query_password_moved(url: URL, name: str) -> URL:
    """`?password=` (libpq takes it) made the URL's password: masked and passed once like any."""
    if "password" not in url.query:
        return url
    given = url.query["password"]
    if not isinstance(given, str) or (url.password is not None and url.password != given):
        raise DatabaseNotConfigured(
            f"{name} gives the password twice (in user:password@ and ?password=): give it "
            "once, percent-encoded in user:password@."
        )
    return url.difference_update_query(["password"]).set(password=given)


def _from_parts(environ: Mapping[str, str]) -> URL:
    from sqlalchemy import URL

    value = {name: environ.get(name) or PLAN_DEFAULTS.get(name) for name in PART_VARIABLES}
    port = value["POSTGRES_PORT"] or ""
    # ASCII digits only: isdigit() alone takes other scripts' digits, and ² (which int() refuses).
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise DatabaseNotConfigured(
            f"POSTGRES_PORT must be a TCP port number (1-65535), got {port!r}."
        )
    return URL.create(
        DRIVER,
        username=value["POSTGRES_USER"],
        password=value["POSTGRES_PASSWORD"],
        host=value["POSTGRES_HOST"],
        port=int(port),
        database=value["POSTGRES_DB"],
    )
