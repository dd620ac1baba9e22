"""Opening a connection, and saying in one line why it could not be opened."""

import os
from collections.abc import Mapping

from sqlalchemy import URL, Connection, Engine, create_engine, pool
from sqlalchemy.exc import OperationalError

from media_db import settings
from media_db.errors import DatabaseUnavailable

__all__ = ["DatabaseUnavailable", "engine_for", "failure_message", "open_connection"]

CONNECT_TIMEOUT_SECONDS = 10


def engine_for(url: URL, purpose: str) -> Engine:
    """A pool-less engine for short-lived tools (migrations, checks)."""
    return create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={
            "application_name": f"{settings.APPLICATION_NAME}-{purpose}",
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        },
    )


def open_connection(purpose: str, environ: Mapping[str, str] = os.environ) -> Connection:
    """A session of the deploy tools: over the direct URL (never a transaction pooler)."""
    try:
        url = settings.direct_url(environ)
    except settings.DatabaseNotConfigured as error:
        raise DatabaseUnavailable(str(error)) from None
    try:
        return engine_for(url, purpose).connect()
    except OperationalError as error:
        raise DatabaseUnavailable(failure_message(url, error.orig)) from None


def failure_message(url: URL, error: BaseException | None) -> str:
    reason = " ".join(str(error).split()) if error else "unknown error"
    return (
        f"Cannot connect to {settings.redacted(url)}: {reason} "
        "(check that the server is up and that DATABASE_URL, DIRECT_DATABASE_URL or POSTGRES_* "
        "are right)"
    )
