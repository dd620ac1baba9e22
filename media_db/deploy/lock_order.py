"""Table locks a step takes together, taken so they cannot deadlock with n8n's writers.

A writer locks our tables in one of two orders: parent first (a media item and its result in one
statement, or one transaction), or child first (a result for an existing item: the child at the
INSERT, media_items when the foreign key check runs at the statement's end). No fixed order of
several ACCESS EXCLUSIVE locks is safe against both: the downgrades of 0002 and 0004 (`LOCK TABLE
processing_jobs, analysis_results, media_items`) deadlocked with the first kind, 0001's drops with
the second, and PostgreSQL then aborted one side, sometimes the writer.

So a step never waits for one of these locks while holding another: in a savepoint it waits for
the first table (bounded by lock_timeout), then tries each other one for a moment shorter than
the server's deadlock_timeout; if one is busy, it rolls back to the savepoint, releasing what it
took (the writer goes on), and starts again waiting for the busy table first. A writer may wait
for the step, never the step for a writer while holding what the writer needs: no cycle, no
abort. Past lock_timeout in all, it gives up with a lock timeout (the retries take it from there).

Registered on import (data_loss.py imports it, alembic/env.py data_loss): a revision's
`op.execute("LOCK TABLE a, b, c IN ... MODE")` (as in 0002, 0004, 0005) is taken this way, the
revision files unchanged; our drops (data_loss.py) lock what their step drops this way before
the first drop.
"""

import re
import time
from collections.abc import Iterable

from alembic.operations import Operations, ops, toimpl
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

LOCK_NOT_AVAILABLE = "55P03"
LOCK_STATEMENT = re.compile(
    r"\s*LOCK\s+(?:TABLE\s+)?(?P<tables>\w+(?:\s*,\s*\w+)+)"
    r"\s+IN\s+(?P<mode>[A-Z ]+?)\s+MODE\s*;?\s*",
    re.IGNORECASE | re.ASCII,
)
MODES = {
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
}
# The most a step waits for a further lock while holding the first: well under deadlock_timeout
# (1 s by default), so a writer waiting behind it never reaches its deadlock check. Short, since
# each try that meets a writer waiting for the lock already held costs the whole moment: against
# two writers racing a downgrade of 0004 (tests/deploy/test_downgrades_never_deadlock_writers.py)
# a round took about 75 such tries, 17 s at 200 ms and 4.4 s at 50 ms. n8n's statements take
# milliseconds, so a try that meets no cycle gets its lock well within it.
MOMENT_MS = 50


def acquire(connection: Connection, tables: Iterable[str], mode: str) -> None:
    """Lock every table in `mode`, in the current transaction, without ever waiting for one while
    holding another; raises OperationalError (lock not available) past lock_timeout."""
    order = list(dict.fromkeys(tables))
    quote = connection.dialect.identifier_preparer.quote
    timeout_ms, deadlock_ms = (
        float(value)
        for value in connection.execute(
            text(
                "SELECT (SELECT setting FROM pg_settings WHERE name = 'lock_timeout'), "
                "(SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout')"
            )
        ).one()
    )
    moment = f"{max(1, min(MOMENT_MS, int(deadlock_ms) // 4))}ms"
    deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
    while True:
        first, *rest = order
        busy: str | None = None  # the further table being tried, once the first is held
        savepoint = connection.begin_nested()
        try:
            connection.exec_driver_sql(f"LOCK TABLE {quote(first)} IN {mode} MODE")
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{moment}'")
            for busy in rest:
                connection.exec_driver_sql(f"LOCK TABLE {quote(busy)} IN {mode} MODE")
        except OperationalError as error:
            savepoint.rollback()  # releases every lock taken since, and the SET LOCAL
            timed_out = getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE
            if busy is None or not timed_out:
                raise  # the first table's wait: a lock timeout like any other
            if deadline is not None and time.monotonic() >= deadline:
                raise
            order = [busy, *(name for name in order if name != busy)]
            continue
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(timeout_ms)}ms'")
        savepoint.commit()
        return


@Operations.implementation_for(ops.ExecuteSQLOp, replace=True)
def execute(operations: Operations, operation: ops.ExecuteSQLOp) -> None:
    """A revision's LOCK of several tables, taken by `acquire`; any other SQL as Alembic runs it."""
    context = operations.migration_context
    match = (
        LOCK_STATEMENT.fullmatch(operation.sqltext) if isinstance(operation.sqltext, str) else None
    )
    mode = " ".join(match["mode"].upper().split()) if match else ""
    bind = None if context.as_sql else context.bind
    if match and mode in MODES and bind is not None and bind.in_transaction():
        acquire(bind, [name.strip() for name in match["tables"].split(",")], mode)
        return
    toimpl.execute_sql(operations, operation)
