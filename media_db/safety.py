"""Deploy safety around `alembic upgrade/downgrade/stamp` (used by alembic/env.py).

- One migrator at a time: a PostgreSQL advisory lock keyed on our version table, held by a
  separate autocommit session (no transaction, no snapshot: a CREATE INDEX CONCURRENTLY in a
  revision cannot deadlock against it). Replicas that lose the race wait, then find the
  database already at the target and do nothing.
- Lock timeouts are retried with backoff, then reported with the sessions that hold our tables.
- A migration that would drop a table holding rows, or a column holding values, refuses unless
  the operator consents.
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

from media_db import backup, guarded_ops
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


BACKUP_CHOICES = ("on", "skip")


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise CommandError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


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
            holder = lock_holder(session, key) or "a session that just let go"
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
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
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

# What each revision declares it drops, by direction: "table" or "table.column" names. Revision
# 0001 predates the column-level declarations: its `drops_tables` are what downgrade() drops.
DECLARED_DROPS = {
    False: ("drops_tables", "drops_columns"),  # downgrade()
    True: ("upgrade_drops_tables", "upgrade_drops_columns"),  # upgrade()
}
SHOWN_UP_TO = 1_000  # rows counted per table or column at most: the answer stays quick at any size


def declared_drops(steps: list[Any]) -> list[str]:
    """Every table and `table.column` the steps will drop, as their revisions declare them."""
    return [
        name
        for step in steps
        for attribute in DECLARED_DROPS[bool(step.is_upgrade)]
        for name in getattr(step.revision.module, attribute, ())
    ]


def refuse_data_loss(connection: Connection, steps: list[Any], consent: bool) -> None:
    """Before any step runs: refuse, changing nothing, if a table or column the steps declare
    they drop holds a row or value, unless the operator consents. The drop itself checks again
    under its lock (media_db/guarded_ops.py): this early check makes a refusal change nothing
    instead of stopping half-way down."""
    holding = {}
    for name in dict.fromkeys(declared_drops(steps)):
        if (found := _values_held(connection, name)) is not None:
            holding[name] = found
    connection.rollback()
    if not holding:
        return
    listed = ", ".join(f"{name} ({found})" for name, found in holding.items())
    if not consent:
        raise CommandError(
            f"Refusing to migrate: it would drop {listed}. Nothing was changed. "
            + guarded_ops.HOW_TO_CONSENT
        )
    log.warning("Dropping, with consent: %s", listed)


def _values_held(connection: Connection, name: str) -> str | None:
    """'3 rows' / '1 value' / 'more than 1,000 rows' when `name` holds data; None when it does
    not, or does not exist."""
    table, _, column = name.partition(".")
    exists = connection.scalar(
        text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attnum > 0 AND NOT attisdropped AND (:c = '' OR attname = :c)"
        ),
        {"t": table, "c": column},
    )
    if not exists:
        return None
    where = f' WHERE "{column}" IS NOT NULL' if column else ""
    found = int(
        connection.scalar(
            text(f'SELECT count(*) FROM (SELECT FROM "{table}"{where} LIMIT {SHOWN_UP_TO + 1}) s')
        )
        or 0
    )
    if not found:
        return None
    noun = "value" if column else "row"
    if found > SHOWN_UP_TO:
        return f"more than {SHOWN_UP_TO:,} {noun}s"
    return f"{found:,} {noun}{'' if found == 1 else 's'}"


def options(
    x_arguments: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    return {
        "lock_wait": _number(_option(x_arguments, environ, "lock-wait", "600"), "lock-wait"),
        "retries": int(_number(_option(x_arguments, environ, "lock-retries", "3"), "lock-retries")),
        "backoff": _number(
            _option(x_arguments, environ, "lock-retry-backoff", "2"), "lock-retry-backoff"
        ),
        "backup": _choice(_option(x_arguments, environ, "backup", "on"), "backup", BACKUP_CHOICES),
        "backup_dir": _option(x_arguments, environ, "backup-dir", str(backup.DEFAULT_DIRECTORY)),
        "progress_interval": _number(
            _option(x_arguments, environ, "progress-interval", "5"), "progress-interval"
        ),
        "allow_data_loss": (
            x_arguments.get("allow-data-loss", "").lower() == "true"
            or environ.get("ALLOW_DATA_LOSS") == "1"
        ),
    }
