"""The Makefile's database verbs: a command against the configured database, else the embedded
PostgreSQL (media_db/dev/embedded.py), started on demand and kept running.

    python -m media_db.dev.local_server exec -- alembic upgrade head  # configured, else embedded
    python -m media_db.dev.local_server start | stop | status | url | psql
"""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from media_db import settings
from media_db.dev import REPO_ROOT
from media_db.dev.embedded import LocalServer, client
from media_db.errors import EXIT_UNAVAILABLE, DatabaseNotConfigured

if TYPE_CHECKING:
    from sqlalchemy import URL


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _exec_with_database(command: list[str]) -> None:
    """Run `command` against the configured database, or the local one when none is."""
    if not command:
        raise SystemExit("usage: python -m media_db.dev.local_server exec -- COMMAND [ARGS...]")
    env = dict(os.environ)
    if not settings.is_configured(env):
        server = LocalServer()
        server.ensure_running()
        print(
            f"No database configured: using the embedded PostgreSQL in "
            f"{_shown(server.home)} (127.0.0.1:{server.running_port()}). "
            "Set DATABASE_URL or POSTGRES_HOST to use another.",
            file=sys.stderr,
        )
        env["DATABASE_URL"] = server.url().render_as_string(hide_password=False)
        # A command it runs may tell the user what to run next: plain `alembic` would find no
        # database outside make (media_db/deploy/failures.py says it the way that works).
        env[settings.EMBEDDED_FALLBACK] = "1"
    os.execvpe(command[0], command, env)  # noqa: S606 - replaces this process, by design


def passwordless_url() -> "URL":
    """The configured database's URL, else the embedded server's (started if needed), in
    libpq's form (psql takes it) and without any password."""
    if settings.is_configured():
        url = settings.database_url()
    else:
        server = LocalServer()
        server.ensure_running()
        url = server.url()
    from sqlalchemy import URL

    # A new URL, not url.set(password=None): SQLAlchemy reads None there as "keep it".
    return URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )


def _psql(target: "URL") -> None:
    """psql on `target` (passwordless_url's), the configured password in its environment."""
    env = dict(os.environ)
    password = settings.database_url().password if settings.is_configured() else None
    if password is not None:
        env["PGPASSWORD"] = str(password)  # never on the command line, where ps shows it
    # A conninfo string, each value quoted: a URL would pass a database name with spaces raw.
    from media_db.pool import conninfo

    program = str(client("psql"))
    os.execve(program, [program, conninfo(target)], env)  # noqa: S606 - replaces this process, by design


def main(argv: list[str]) -> None:
    verb, rest = (argv[0], argv[1:]) if argv else ("status", [])
    server = LocalServer()
    if verb == "exec":
        _exec_with_database(rest[1:] if rest[:1] == ["--"] else rest)
    elif verb == "start":
        started = server.ensure_running()
        state = "started" if started else "already running"
        print(
            f"embedded PostgreSQL {state} on 127.0.0.1:{server.running_port()}, "
            f"data in {server.data}"
        )
    elif verb == "stop":
        print("embedded PostgreSQL stopped" if server.stop() else "embedded PostgreSQL not running")
    elif verb in {"url", "psql"}:
        try:
            url = passwordless_url()
        except DatabaseNotConfigured as error:  # a malformed DATABASE_URL: one line, as db-check
            print(error, file=sys.stderr)
            raise SystemExit(EXIT_UNAVAILABLE) from None
        if verb == "url":
            print(settings.libpq_uri(url))
        else:
            _psql(url)
    elif verb == "status":
        port = server.running_port()
        print(
            f"embedded PostgreSQL running on 127.0.0.1:{port}"
            if port
            else "embedded PostgreSQL not running"
        )
    else:
        raise SystemExit(f"unknown verb {verb!r}: use exec, start, stop, status, url or psql")


if __name__ == "__main__":
    main(sys.argv[1:])
