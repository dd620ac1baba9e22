"""Deploy safety around `alembic upgrade/downgrade/stamp` (used by alembic/env.py).

- One migrator at a time: a PostgreSQL advisory lock keyed on our version table, held by a
  separate autocommit session (no transaction, no snapshot: a CREATE INDEX CONCURRENTLY in a
  revision cannot deadlock against it). Replicas that lose the race wait, then find the
  database already at the target and do nothing.
- Lock timeouts are retried with backoff, then reported with the sessions that hold our tables.
- A downgrade that would drop tables holding rows refuses unless the operator consents.
"""

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from models import Base

log = logging.getLogger("alembic.env")

OUR_TABLES = tuple(Base.metadata.tables)
LOCK_NOT_AVAILABLE, DEADLOCK = "55P03", "40P01"


def _option(
    x_arguments: Mapping[str, str], environ: Mapping[str, str], name: str, default: str
) -> str:
    return (
        x_arguments.get(name)
        or environ.get(f"MIGRATION_{name.upper().replace('-', '_')}")
        or default
    )


def _number(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CommandError(f"{name} must be a number, got {value!r}") from None


# --- short lock waits ---------------------------------------------------------------------

# Our migration session waits at most this long for a lock (n8n's traffic queues behind any
# lock request of ours while it waits) and this long for one statement. Session settings of our
# own connection only: never server- or role-wide, the database is shared.
DEFAULT_TIMEOUTS = {"lock_timeout": "5s", "statement_timeout": "15min"}
TIMEOUT_FORMAT = re.compile(r"\d+(ms|s|min|h)?")


def timeout_settings(x_arguments: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """`SET` statements for the migration session: `-x lock_timeout=10s`, else the environment's
    MIGRATION_LOCK_TIMEOUT (likewise statement_timeout), else the defaults."""
    statements = []
    for name, default in DEFAULT_TIMEOUTS.items():
        value = _option(x_arguments, environ, name, default)
        if not TIMEOUT_FORMAT.fullmatch(value):
            raise CommandError(
                f"{name}={value!r} is not a duration PostgreSQL takes here: use e.g. 500ms, 5s, "
                f"15min (via -x {name}=... or MIGRATION_{name.upper()})"
            )
        statements.append(f"SET {name} = '{value}'")
    return statements


# --- one migrator at a time -------------------------------------------------------------------


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
        deadline, pause, last_holder = time.monotonic() + wait_seconds, 0.05, None
        while not session.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
            holder = _lock_holder(session, key)
            if holder != last_holder:
                log.info("Waiting for the migration lock, held by %s", holder)
                last_holder = holder
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Another migration holds the migration lock ({holder}) and did not finish "
                    f"within {wait_seconds:g} s; nothing was changed. Wait for it, or raise "
                    "MIGRATION_LOCK_WAIT (seconds)."
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        try:
            yield
        finally:
            session.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def _lock_holder(session: Connection, key: int) -> str:
    row = session.execute(
        text("""
            SELECT a.pid, a.application_name, a.client_addr, a.backend_start
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND l.classid = ((:key >> 32) & 4294967295)::bigint::oid
              AND l.objid = (:key & 4294967295)::bigint::oid AND l.objsubid = 1
        """),
        {"key": key},
    ).first()
    if row is None:
        return "a session that just let go"
    return (
        f"pid {row.pid} ({row.application_name or 'no application_name'}, "
        f"from {row.client_addr or 'local socket'}, since {row.backend_start:%H:%M:%S})"
    )


# --- lock timeouts: retry, then say who blocks ------------------------------------------------


def run_with_retries(
    connection: Connection,
    run: Callable[[], None],
    current: Callable[[], tuple[str, ...]],
    retries: int,
    backoff_seconds: float,
) -> None:
    """Run the migrations; on a lock timeout (or a deadlock) the failed revision rolled back
    whole, so run again from where the database is, up to `retries` more times."""
    for attempt in range(retries + 1):
        try:
            run()
            return
        except OperationalError as error:
            code = getattr(error.orig, "sqlstate", None)
            if code not in (LOCK_NOT_AVAILABLE, DEADLOCK):
                raise
            if connection.in_transaction():
                connection.rollback()
            blockers = _blockers(connection)
            at = ", ".join(current()) or "base"
            connection.rollback()
            if attempt == retries:
                raise CommandError(
                    f"Gave up after {retries + 1} attempts: "
                    f"{'a deadlock' if code == DEADLOCK else 'lock_timeout'} each time. "
                    f"Blocking: {blockers}. The failed revision was rolled back; the database "
                    f"is at revision {at}. Retry when the blocker is gone, or end it."
                ) from None
            wait = backoff_seconds * 2**attempt
            log.warning(
                "Lock timeout (attempt %d of %d; blocking: %s); retrying in %.1f s",
                attempt + 1,
                retries + 1,
                blockers,
                wait,
            )
            time.sleep(wait)


def _blockers(connection: Connection) -> str:
    rows = connection.execute(
        text("""
            SELECT DISTINCT a.pid, a.application_name, a.state, left(a.query, 120) AS query
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.granted AND l.pid <> pg_backend_pid()
              AND l.relation IN (SELECT to_regclass(t) FROM unnest(CAST(:tables AS text[])) t)
            ORDER BY a.pid
        """),
        {"tables": list(OUR_TABLES)},
    ).all()
    connection.rollback()
    if not rows:
        return "no session holds our tables now"
    return "; ".join(
        f"pid {r.pid} ({r.application_name or '?'}, {r.state}): {' '.join(r.query.split())}"
        for r in rows
    )


# --- no silent data loss ------------------------------------------------------------------------


def refuse_data_loss(connection: Connection, steps: list[Any], consent: bool) -> None:
    """Before any downgrade step runs: count the rows of every table the steps would drop
    (declared by each revision as `drops_tables`); refuse, changing nothing, unless consent."""
    doomed = [
        table
        for step in steps
        if not step.is_upgrade
        for table in getattr(step.revision.module, "drops_tables", ())
    ]
    holding = {}
    for table in doomed:
        if connection.scalar(text("SELECT to_regclass(:t)"), {"t": table}) is not None:
            rows = int(connection.scalar(text(f'SELECT count(*) FROM "{table}"')) or 0)
            if rows:
                holding[table] = rows
    connection.rollback()
    if holding and not consent:
        listed = ", ".join(f"{table} ({rows:,} rows)" for table, rows in holding.items())
        raise CommandError(
            f"Refusing to downgrade: it would drop {listed}. Nothing was changed. Back up, then "
            "consent with `-x allow-data-loss=true` (or ALLOW_DATA_LOSS=1 for make)."
        )
    if holding:
        log.warning("Dropping tables with rows, with consent: %s", holding)


def options(
    x_arguments: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    return {
        "lock_wait": _number(_option(x_arguments, environ, "lock-wait", "600"), "lock-wait"),
        "retries": int(_number(_option(x_arguments, environ, "lock-retries", "3"), "lock-retries")),
        "backoff": _number(
            _option(x_arguments, environ, "lock-retry-backoff", "2"), "lock-retry-backoff"
        ),
        "allow_data_loss": (
            x_arguments.get("allow-data-loss", "").lower() == "true"
            or environ.get("ALLOW_DATA_LOSS") == "1"
        ),
    }
