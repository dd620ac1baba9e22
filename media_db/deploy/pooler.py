"""Migrations refuse to run through a transaction pooler (PgBouncer `pool_mode = transaction`).

A migration needs one server session from start to end: its advisory lock, its lock_timeout and
statement_timeout, and the backends our lock waits for are all per session. Through a
transaction pooler each transaction may run on another server connection, so the lock stays on
a pooled connection nobody releases, and a `SET` leaks to whichever client (n8n) gets it next.

The probe holds a second connection's transaction open and looks at the backends: a pooler that
gives the second client the first one's backend (PgBouncer reuses the last one freed), or moves
the first client to another backend between two transactions, shares backends between clients.
A server or a session pooler gives each client its own. It runs before any `SET`, so a refusal
changes nothing, on the server or in the pool.
"""

from alembic.util import CommandError
from sqlalchemy import Connection

from media_db import settings

BACKEND = "SELECT pg_backend_pid()"


def refuse_transaction_pooler(connection: Connection) -> None:
    first = _backend_in_own_transaction(connection)
    with connection.engine.connect() as other:
        # Left open until the end: the server connection under it cannot be handed to anyone else.
        other_backend = other.exec_driver_sql(BACKEND).scalar()
        again = first if other_backend == first else _backend_in_own_transaction(connection)
        other.rollback()
    if other_backend == first or again != first:
        shared = (
            f"a second session got the first one's server backend (pid {first})"
            if other_backend == first
            else f"its session moved from server backend pid {first} to pid {again}"
        )
        name = "DIRECT_DATABASE_URL" if settings.has_direct_url() else "DATABASE_URL"
        raise CommandError(
            f"{name} leads to a transaction pooler: {shared} between two transactions, so the "
            "migration's lock and timeouts would not hold. Nothing was changed. Set "
            "DIRECT_DATABASE_URL to a session connection to the same database (the server "
            "itself, or a session-mode pool) and run the command again."
        )


def _backend_in_own_transaction(connection: Connection) -> int:
    backend = connection.exec_driver_sql(BACKEND).scalar()
    connection.commit()
    return int(backend or 0)
