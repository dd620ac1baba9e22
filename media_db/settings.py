"""Where the database is: the one place that turns the environment into a SQLAlchemy URL.

Used by alembic/env.py, the Makefile helpers, the tests and the application alike.

Order: `DATABASE_URL` if set; otherwise the `POSTGRES_*` variables, with the seed plan's defaults
for everything but the password. With none of them set there is no silent fallback: the caller
gets `DatabaseNotConfigured`, naming the variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

__all__ = ["DatabaseNotConfigured", "database_url", "is_configured", "redacted"]

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
ACCEPTED_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}

ENCODING = "@ as %40, : as %3A, / as %2F, % as %25"
HOW_TO_CONFIGURE = (
    "set DATABASE_URL (postgresql://user:password@host:port/dbname, password percent-encoded) "
    "or POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER, POSTGRES_PASSWORD"
)


def is_configured(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ("DATABASE_URL", *PART_VARIABLES))


def database_url(environ: Mapping[str, str] = os.environ) -> URL:
    """The URL of our database, for psycopg 3. Never formats a password into a string."""
    if raw := environ.get("DATABASE_URL"):
        return _from_database_url(raw)
    if is_configured(environ):
        return _from_parts(environ)
    raise DatabaseNotConfigured(f"No database configured: {HOW_TO_CONFIGURE}.")


def redacted(url: URL) -> str:
    """The URL as it may appear in logs and messages: password replaced by ***."""
    return url.render_as_string(hide_password=True)


def _from_database_url(raw: str) -> URL:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    # A raw @ in the password ends it early: the rest would be read as host, port or database
    # and echoed by every later error. Refuse without showing any part of the URL.
    if raw.count("@") > 1:
        raise DatabaseNotConfigured(
            "DATABASE_URL holds more than one raw '@': percent-encode the user name and password "
            f"({ENCODING}), or set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB, POSTGRES_USER and "
            "POSTGRES_PASSWORD instead (the password raw)."
        )
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the string, password included: say it without it.
        raise DatabaseNotConfigured(
            "DATABASE_URL is not a valid URL; expected "
            "postgresql://user:password@host:port/dbname with a numeric port and special "
            f"characters in the password percent-encoded ({ENCODING})."
        ) from None
    if url.drivername not in ACCEPTED_SCHEMES:
        raise DatabaseNotConfigured(
            f"DATABASE_URL uses {url.drivername!r}; this project speaks PostgreSQL through "
            f"psycopg 3: use postgresql:// (or {DRIVER}://)."
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise DatabaseNotConfigured("DATABASE_URL's port must be a TCP port number (1-65535).")
    if not url.database:
        raise DatabaseNotConfigured("DATABASE_URL names no database: add /dbname to its end.")
    return _query_password_moved(url).set(drivername=DRIVER)


def _query_password_moved(url: URL) -> URL:
    """`?password=` (libpq takes it) made the URL's password: masked and passed once like any."""
    if "password" not in url.query:
        return url
    given = url.query["password"]
    if not isinstance(given, str) or (url.password is not None and url.password != given):
        raise DatabaseNotConfigured(
            "DATABASE_URL gives the password twice (in user:password@ and ?password=): give it "
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
