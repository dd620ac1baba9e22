"""One migrator at a time: a PostgreSQL advisory lock keyed on our version table, held by a
separate autocommit session (no transaction, no snapshot: a CREATE INDEX CONCURRENTLY in a
revision cannot deadlock against it). Replicas that lose the race wait, then find the database
already at the target and do nothing. No DDL starts while a backend of an earlier migration is
still busy (its client killed, say)."""

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from media_db import settings

log = logging.getLogger(__name__)

# What our migration sessions call themselves in pg_stat_activity (media_db/connect.py).
MIGRATION_SESSION_NAME = f"{settings.APPLICATION_NAME}-migrations"
LOCK_SESSION_NAME = f"{settings.APPLICATION_NAME}-migration-lock"


def advisory_key(version_table: str) -> int:
    """A stable signed 64-bit key derived from the version table's name."""
    digest = hashlib.sha256(version_table.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def migration_lock(
    connection: Connection, version_table: str, wait_seconds: float
) -> Iterator[None]:
    key = advisory_key(version_table)
    with connection.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as session:
        # Told apart from the migration sessions proper, which the wait below looks for.
        session.execute(
            text("SELECT set_config('application_name', :name, false)"), {"name": LOCK_SESSION_NAME}
        )
        deadline, pause, last_holder = time.monotonic() + wait_seconds, 0.05, None
        while not session.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
            holder = lock_holder(session, key) or "a session that just let go"
            if holder != last_holder:
                log.info("Waiting for the migration lock, held by %s", holder)
                last_holder = holder
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Another migration holds the migration lock ({holder}) and did not finish "
                    f"within {wait_seconds:g} s; nothing was changed. Wait for it, or raise "
                    "MIGRATION_LOCK_WAIT (e.g. 30min)."
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        try:
            _wait_for_earlier_backends(connection, session, deadline, wait_seconds)
            yield
        finally:
            try:
                session.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            except DBAPIError as error:
                # A server gone away took the lock with the session: nothing to release.
                if not error.connection_invalidated:
                    raise


def _wait_for_earlier_backends(
    connection: Connection, session: Connection, deadline: float, wait_seconds: float
) -> None:
    """A migrator killed mid-revision (kill -9) loses its lock session at once, but its server
    backend goes on with the statement it was running (a CREATE INDEX CONCURRENTLY can take
    minutes) until it next talks to its vanished client. Starting DDL meanwhile collides with it:
    wait until no other migration session of ours is busy in this database."""
    own = connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    last = None
    while busy := _busy_migration_backends(session, own):
        if busy != last:
            log.info(
                "Waiting for a migration backend still running (its client may be gone): %s", busy
            )
            last = busy
        if time.monotonic() >= deadline:
            raise CommandError(
                f"A migration backend is still running: {busy}; it did not finish within "
                f"{wait_seconds:g} s and nothing was changed. Wait for it (or end it with "
                "pg_cancel_backend(pid)), then run the command again."
            )
        time.sleep(0.5)


def _busy_migration_backends(session: Connection, own: int) -> str:
    rows = session.execute(
        text("""
            SELECT pid, state, query_start, left(query, 120) AS query FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = :name
              AND pid NOT IN (pg_backend_pid(), :own) AND state <> 'idle'
            ORDER BY pid
        """),
        {"name": MIGRATION_SESSION_NAME, "own": own},
    ).all()
    return "; ".join(
        f"pid {r.pid} ({MIGRATION_SESSION_NAME}, {r.state} since {r.query_start:%H:%M:%S}): "
        f"{' '.join(r.query.split())}"
        for r in rows
    )


def lock_holder(session: Connection, key: int) -> str | None:
    """Who holds the migration lock keyed `key`, or None."""
    row = session.execute(
        text("""
            SELECT a.pid, a.application_name, a.client_addr, a.backend_start
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = ((:key >> 32) & 4294967295)::bigint::oid
              AND l.objid = (:key & 4294967295)::bigint::oid AND l.objsubid = 1
        """),
        {"key": key},
    ).first()
    if row is None:
        return None
    return (
        f"pid {row.pid} ({row.application_name or 'no application_name'}, "
        f"from {row.client_addr or 'local socket'}, since {row.backend_start:%H:%M:%S})"
    )
