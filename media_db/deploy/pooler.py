"""Migrations run only over a connection that is its server session (no transaction pooler).

A migration needs one server session from start to end: its advisory lock, its lock_timeout and
statement_timeout, and the backends our lock waits for are all per session. Through a
transaction pooler each transaction may run on another server connection, so the lock stays on
a pooled connection nobody releases, and a `SET` leaks to whichever client (n8n) gets it next.

The check (media_db/intermediary.py) is deterministic: anything between our socket and the
backend shows, whatever traffic a pooler carries. An intermediary that keeps one server session
per client (PgBouncer in session mode, a TCP proxy, NAT) is declared with
POSTGRES_POOLER=session. The check runs before any `SET`, so a refusal changes nothing, on the
server or in the pool.
"""

from alembic.util import CommandError
from sqlalchemy import Connection

from media_db import intermediary, settings


def refuse_transaction_pooler(connection: Connection) -> None:
    if settings.pooler() == "session" and not settings.has_direct_url():
        return  # declared: DATABASE_URL is a session pooler, and the deploy goes through it
    seen = connection.exec_driver_sql(intermediary.BACKEND_END).one()
    connection.commit()
    raw = connection.connection.driver_connection
    assert raw is not None
    found = intermediary.between(raw.pgconn.socket, tuple(seen))
    if found is None:
        return
    if settings.has_direct_url():
        name, fix = "DIRECT_DATABASE_URL", "point DIRECT_DATABASE_URL at the server itself"
    else:
        name, fix = (
            "DATABASE_URL",
            "set DIRECT_DATABASE_URL to the server itself; or, if what is in between keeps one "
            "server session per client (PgBouncer in session mode, a TCP proxy, NAT), set "
            "POSTGRES_POOLER=session",
        )
    raise CommandError(
        f"{name} does not lead straight to the server ({found}): it may be a transaction "
        "pooler, and then the migration's lock and timeouts would not hold. Nothing was "
        f"changed. To migrate, {fix}, and run the command again."
    )
