"""Deploy safety around `alembic upgrade/downgrade/stamp` (used by alembic/env.py).

- One migrator at a time: a PostgreSQL advisory lock keyed on our version table, held by a
  separate autocommit session (no transaction, no snapshot: a CREATE INDEX CONCURRENTLY in a
  revision cannot deadlock against it). Replicas that lose the race wait, then find the
  database already at the target and do nothing.
- No DDL while a backend of an earlier migration is still busy (its client killed, say).
- Lock timeouts are retried with backoff, then reported with the sessions that hold our tables.
- A migration that would drop a table holding rows, or a column holding values, refuses unless
  the operator consents.
- Every option (-x or environment) is validated before anything runs.
"""

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypedDict

from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError

from media_db import backup, guarded_ops, settings
from models import Base

log = logging.getLogger("alembic.env")

OUR_TABLES = tuple(Base.metadata.tables)
# What our migration sessions call themselves in pg_stat_activity (media_db/connect.py).
MIGRATION_SESSION_NAME = f"{settings.APPLICATION_NAME}-migrations"
LOCK_SESSION_NAME = f"{settings.APPLICATION_NAME}-migration-lock"
LOCK_NOT_AVAILABLE, DEADLOCK = "55P03", "40P01"


# --- options: -x name=value, else the environment, else the default ---------------------------


class DeployOptions(TypedDict):
    lock_wait: float
    retries: int
    backoff: float
    allow_data_loss: bool
    debug: bool
    backup: str
    backup_dir: str
    progress_interval: float


@dataclass(frozen=True)
class Option:
    """One deploy option: where it is read from, what it accepts, and a value to show as example."""

    name: str  # as given with -x
    environment: str
    default: str
    kind: str  # "seconds", "count", "duration", "switch", "choice" or "path"
    maximum: float = 0  # seconds (durations: in seconds too), or a count
    example: str = ""
    # Switches: the exact values that mean yes and no, given with -x / in the environment.
    x_values: tuple[str, str] = ("true", "false")
    environment_values: tuple[str, str] = ("1", "0")
    choices: tuple[str, ...] = ()  # "choice": the values accepted


# Our migration session waits at most lock_timeout for a lock (n8n's traffic queues behind any
# lock request of ours while it waits) and statement_timeout for one statement. Session settings
# of our own connection only: never server- or role-wide, the database is shared. Both must be
# bounded: 0 would mean "wait forever", which is exactly what they exist to prevent.
OPTIONS = {
    option.name: option
    for option in (
        Option("lock_timeout", "MIGRATION_LOCK_TIMEOUT", "5s", "duration", 600, "5s"),
        Option(
            "statement_timeout", "MIGRATION_STATEMENT_TIMEOUT", "15min", "duration", 86400, "15min"
        ),
        Option("lock-wait", "MIGRATION_LOCK_WAIT", "600", "seconds", 86400, "600"),
        Option("lock-retries", "MIGRATION_LOCK_RETRIES", "3", "count", 10, "3"),
        Option("lock-retry-backoff", "MIGRATION_LOCK_RETRY_BACKOFF", "2", "seconds", 60, "2"),
        Option("allow-data-loss", "ALLOW_DATA_LOSS", "", "switch", example="true"),
        Option("debug", "MIGRATION_DEBUG", "", "switch", example="true"),
        # Before a consented drop, its rows go to a file (media_db/backup.py), unless skipped.
        Option(
            "backup", "MIGRATION_BACKUP", "on", "choice", example="skip", choices=("on", "skip")
        ),
        Option(
            "backup-dir",
            "MIGRATION_BACKUP_DIR",
            str(backup.DEFAULT_DIRECTORY),
            "path",
            example="/var/backups/media",
        ),
        Option("progress-interval", "MIGRATION_PROGRESS_INTERVAL", "5", "seconds", 3600, "5"),
    )
}
TIMEOUTS = ("lock_timeout", "statement_timeout")
DURATION = re.compile(r"(\d{1,12})(ms|s|min|h)?")  # no unit: milliseconds, as PostgreSQL reads it
DURATION_SECONDS = {"ms": 0.001, "": 0.001, "s": 1, "min": 60, "h": 3600}
SECONDS = re.compile(r"\d{1,9}(\.\d{1,6})?")
COUNT = re.compile(r"\d{1,9}")


def _raw(
    option: Option, x_arguments: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[str, str | None]:
    """The value, and the name it was given under (None: the default). An empty environment
    variable counts as unset, as in a shell; an empty -x value is a mistake."""
    if option.name in x_arguments:
        return x_arguments[option.name], f"-x {option.name}"
    if value := environ.get(option.environment, ""):
        return value, option.environment
    return option.default, None


def _parse(option: Option, x_arguments: Mapping[str, str], environ: Mapping[str, str]) -> Any:
    value, given = _raw(option, x_arguments, environ)
    if option.kind == "switch":
        yes, no = option.environment_values if given == option.environment else option.x_values
        if value in (yes, no) or given is None:
            return value == yes
        accepted = (
            f"exactly {yes} (consent) or {no}"
            if option.name == "allow-data-loss"
            else (f"exactly {yes} or {no}")
        )
    elif option.kind == "choice":
        if value in option.choices:
            return value
        accepted = f"one of {', '.join(option.choices)}"
    elif option.kind == "path":
        if value.strip():
            return value
        accepted = "a folder"
    elif option.kind == "duration":
        match = DURATION.fullmatch(value)
        if match and 0 < int(match[1]) * DURATION_SECONDS[match[2] or ""] <= option.maximum:
            return value
        accepted = (
            f"a duration above 0 and at most {_shown_seconds(option.maximum)} "
            "(a whole number with ms, s, min or h)"
        )
    else:
        pattern = COUNT if option.kind == "count" else SECONDS
        if pattern.fullmatch(value) and float(value) <= option.maximum:
            return int(value) if option.kind == "count" else float(value)
        what = "a whole number" if option.kind == "count" else "a number of seconds"
        accepted = f"{what} from 0 to {option.maximum:g}"
    good = option.environment_values[0] if option.kind == "switch" else option.example
    raise CommandError(
        f"{given}={value!r} refused: it must be {accepted}; e.g. -x {option.name}="
        f"{option.example} or {option.environment}={good}."
    )


def _shown_seconds(seconds: float) -> str:
    return f"{seconds / 60:g}min" if seconds < 3600 else f"{seconds / 3600:g}h"


def options(
    x_arguments: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> DeployOptions:
    """Every deploy option, validated before anything runs: an unknown -x name, a value of the
    wrong type, out of range or unbounded is refused in one line naming it and a good value."""
    unknown = sorted(set(x_arguments) - set(OPTIONS))
    if unknown:
        raise CommandError(
            f"Unknown -x option {', '.join(unknown)}: use {', '.join(OPTIONS)} "
            "(e.g. -x lock_timeout=5s)."
        )
    value = {name: _parse(option, x_arguments, environ) for name, option in OPTIONS.items()}
    return {
        "lock_wait": value["lock-wait"],
        "retries": value["lock-retries"],
        "backoff": value["lock-retry-backoff"],
        "allow_data_loss": value["allow-data-loss"],
        "debug": value["debug"],
        "backup": value["backup"],
        "backup_dir": value["backup-dir"],
        "progress_interval": value["progress-interval"],
    }


def timeout_settings(x_arguments: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """`SET` statements for the migration session: `-x lock_timeout=10s`, else the environment's
    MIGRATION_LOCK_TIMEOUT (likewise statement_timeout), else the defaults."""
    return [f"SET {name} = '{_parse(OPTIONS[name], x_arguments, environ)}'" for name in TIMEOUTS]


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
                    "MIGRATION_LOCK_WAIT (seconds)."
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


# --- lock timeouts: retry, then say who blocks ------------------------------------------------


def run_with_retries(
    connection: Connection,
    run: Callable[[], None],
    retries: int,
    backoff_seconds: float,
) -> None:
    """Run the migrations; on a lock timeout (or a deadlock) run again from where the database
    is, up to `retries` more times. A transactional revision rolled back whole; the non-atomic
    ones are written to be re-run from any point they stop at."""
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
            connection.rollback()
            if attempt == retries:
                # What the failure left behind and what to run next: media_db/failures.py.
                raise CommandError(
                    f"gave up after {retries + 1} attempt{'s' if retries else ''}, "
                    f"{'a deadlock' if code == DEADLOCK else 'lock_timeout'} each time "
                    f"(blocking: {blockers}); end the blocker or wait for it to finish"
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
