"""`make status` (`python -m media_db.deploy.status [--json]`): the operator's view before and
after a deploy, read-only.

Shows the revision against head and what is pending (with each revision's `Locks:`, and the
rows that would violate a CHECK, UNIQUE or NOT NULL it adds), applied revisions whose file
changed since (checksums in the migration history), drift against the
models (`make verify`'s comparison, at head only: behind head the models are ahead by design),
the expand/contract transitions in flight (kind, table, old and new column, since when, rows
left to backfill), INVALID indexes, the migration lock's holder, sessions whose open
transactions on our tables would block DDL now, processing_jobs' dead tuples and last
autovacuum, queue health, the streaming standbys and how far behind each is (marked when
batched backfills would wait for it: past MIGRATION_MAX_REPLICA_LAG), and the server's major.

Exit status: 0 when nothing needs attention, 1 when something does (each such line is marked
`!`), 3 when the database cannot be read (EXIT_UNAVAILABLE, as for every command of ours). The
session waits at most STATUS_LOCK_TIMEOUT for any lock and STATUS_STATEMENT_TIMEOUT per
statement, so a busy database cannot hang it.
"""

import argparse
import json
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from media_db import transitions
from media_db.connect import open_connection
from media_db.deploy import (
    history,
    history_shape,
    limits,
    lock,
    options,
    preconditions,
    project,
    sessions,
    squashed,
    throttle,
    verify,
)
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable
from media_db.models import JobStatus

STATUS_LOCK_TIMEOUT, STATUS_STATEMENT_TIMEOUT = "1s", "30s"
# A transaction older than the migrations' lock_timeout on one of our tables makes DDL give up.
BLOCKING_AFTER_SECONDS = 5.0
# Each claim leaves a dead entry in the claim index until VACUUM (measured: after 3,000 claims
# the next one read 1,274 buffers instead of 40); past this many, claims read noticeably more.
DEAD_TUPLES_ATTENTION = 10_000

INVALID_INDEXES = text("""
    SELECT c.relname AS tbl, i.relname AS idx FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
    WHERE NOT x.indisvalid AND c.relnamespace = CAST(current_schema() AS regnamespace)
      AND c.relname = ANY(:tables) ORDER BY 1, 2
""")
# Queue health, once the queue has leases (revision 0010): one read-only statement.
HAS_LEASES = text("""
    SELECT count(*) FROM pg_attribute
    WHERE attrelid = to_regclass('processing_jobs') AND attname = 'locked_until'
      AND NOT attisdropped
""")
QUEUE_HEALTH = text(f"""
    SELECT
      (SELECT coalesce(json_object_agg(status, n), '{{}}') FROM
         (SELECT status, count(*) AS n FROM processing_jobs GROUP BY status) s) AS counts,
      (SELECT extract(epoch FROM now() - min(run_at)) FROM processing_jobs
       WHERE status = '{JobStatus.QUEUED}' AND run_at <= now()) AS oldest_due_seconds,
      (SELECT count(*) FROM processing_jobs
       WHERE status = '{JobStatus.RUNNING}' AND locked_until < now() - :grace) AS past_lease,
      (SELECT count(*) FROM processing_jobs
       WHERE status = '{JobStatus.FAILED}' AND completed_at > now() - interval '1 hour')
        AS failed_last_hour
""")
# Live workers rescue an expired lease within one poll: one expired this long ago has none.
PAST_LEASE_GRACE = timedelta(minutes=1)
VACUUM = text("""
    SELECT n_live_tup, n_dead_tup, last_autovacuum, last_vacuum FROM pg_stat_user_tables
    WHERE relid = to_regclass('processing_jobs')
""")


@dataclass
class Status:
    server_major: int = 0
    in_recovery: bool = False  # a standby: read-only, a deploy cannot run here
    current: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    pending: list[dict[str, str]] = field(default_factory=list)
    # Rows that break what a pending revision adds (rows None: not counted, error says why).
    pending_violations: list[dict[str, Any]] = field(default_factory=list)
    changed_since_applied: list[str] = field(default_factory=list)
    without_checksum: list[str] = field(default_factory=list)
    drift: list[str] | None = None  # None: not compared (not at head)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    invalid_indexes: list[str] = field(default_factory=list)
    migration_lock_holder: str | None = None
    blocking_sessions: list[dict[str, Any]] = field(default_factory=list)
    blocking_after_seconds: float = BLOCKING_AFTER_SECONDS
    processing_jobs: dict[str, Any] = field(default_factory=dict)
    queue: dict[str, Any] = field(default_factory=dict)  # {} before revision 0010
    # Keys paused or at their limit (processing_limits; `make limits` shows every key).
    paused_keys: list[dict[str, Any]] = field(default_factory=list)
    keys_at_limit: list[dict[str, Any]] = field(default_factory=list)
    limited_keys: int = 0
    standbys: list[dict[str, Any]] = field(default_factory=list)
    max_replica_lag: float = 0.0
    history_problems: list[str] = field(default_factory=list)  # two heads, an id twice
    attention: list[str] = field(default_factory=list)
    seconds: float = 0.0


def locks_of(script: Script) -> str:
    """The `Locks:` paragraph of a revision's docstring, on one line."""
    doc = script.module.__doc__ or ""
    start = doc.find("Locks:")
    if start < 0:
        return "(no Locks: line)"
    paragraph = doc[start:].split("\n\n", 1)[0].removeprefix("Locks:")
    # `make revision` lists both directions: what an upgrade takes is the upgrade part.
    if "\n  upgrade:" in paragraph:
        paragraph = paragraph.split("\n  upgrade:", 1)[1].split("\n  downgrade:", 1)[0]
    return " ".join(paragraph.split())


def collect(
    connection: Connection, script: ScriptDirectory, blocking_after: float = BLOCKING_AFTER_SECONDS
) -> Status:
    """Every check, in the order `render` shows them; each adds its findings to `status`."""
    began = time.monotonic()
    status = Status(blocking_after_seconds=blocking_after)
    applied = check_server_and_revisions(connection, script, status)
    if status.pending:
        check_pending_demands(connection, script, status)
    check_checksums(connection, script, applied, status)
    if status.current == status.head:  # behind head the models are ahead by design
        check_drift(connection, status)
    check_transitions(connection, status)
    check_invalid_indexes(connection, status)
    status.migration_lock_holder = lock.lock_holder(
        connection, lock.advisory_key(project.VERSION_TABLE)
    )
    check_blocking_sessions(connection, status)
    check_queue_table(connection, status)
    check_queue_health(connection, status)
    check_limits(connection, status)
    check_standbys(connection, status)
    connection.rollback()
    status.seconds = round(time.monotonic() - began, 3)
    return status


def check_server_and_revisions(
    connection: Connection, script: ScriptDirectory, status: Status
) -> list[str]:
    """The server's major, the revision against head, what is pending; returns what is applied."""
    version = connection.dialect.server_version_info or (0,)
    status.server_major = int(version[0])
    if status.server_major < project.OLDEST_MAJOR:
        status.attention.append(f"server {status.server_major} is older than we support")
    status.in_recovery = bool(connection.exec_driver_sql("SELECT pg_is_in_recovery()").scalar())
    if status.in_recovery:
        status.attention.append("connected to a standby")
    status.current = sorted(project.current_heads(connection))
    status.head = sorted(script.get_heads())
    try:  # a database left below a squash's baseline has no place in this history
        squashed.refuse_replaced_current(status.current, script)
    except CommandError as error:
        status.attention.append(str(error))
        return []
    status.history_problems = history_shape.problems(script)
    if status.history_problems:
        status.attention.append("the revision history is not one line")
    applied = [
        found.revision
        for found in script.revision_map.iterate_revisions(tuple(status.current), "base")
        if found is not None
    ]
    for later in script.iterate_revisions("heads", tuple(status.current) or "base"):
        if later.revision not in applied:
            status.pending.append({"revision": later.revision, "locks": locks_of(later)})
    status.pending.reverse()
    if status.pending:
        status.attention.append(f"{_plural(len(status.pending), 'revision')} pending")
    return applied


def check_pending_demands(connection: Connection, script: ScriptDirectory, status: Status) -> None:
    """Rows that would make a pending revision's CHECK, UNIQUE or NOT NULL fail mid-deploy."""
    try:
        findings = preconditions.check(connection, script, status.current)
    except CommandError as error:  # the offline SQL could not be rendered (e.g. a bad option)
        findings = [preconditions.Finding("?", "?", "what pending revisions add", None, str(error))]
    status.pending_violations = [asdict(finding) for finding in findings]
    for finding in findings:
        counted = (
            _breaking(finding.rows)
            if finding.rows is not None
            else f"not counted ({finding.error})"
        )
        status.attention.append(
            f"pending {finding.revision} adds {finding.what} on {finding.table}: {counted}"
        )


def check_checksums(
    connection: Connection, script: ScriptDirectory, applied: list[str], status: Status
) -> None:
    """Applied revisions whose file changed since, or that the history has no checksum for.
    After `make squash`, a revision a baseline replaced is checked against its archived file:
    the baseline's own id against either file (a database ran one or the other)."""
    recorded = history.applied_checksums(connection) if history.table_exists(connection) else {}
    archived = squashed.archived_checksums()
    # Replaced revisions applied here before the squash (a database built since has no row).
    for rev in sorted(set(archived) - set(applied)):
        if recorded.get(rev) is not None and recorded[rev] not in archived[rev]:
            status.changed_since_applied.append(rev)
    for rev in reversed(applied):
        file = script.get_revision(rev)
        if recorded.get(rev) is None or file is None:
            status.without_checksum.append(rev)
        elif recorded[rev] not in {history.checksum(file.path), *archived.get(rev, ())}:
            status.changed_since_applied.append(rev)
    if status.changed_since_applied:
        status.attention.append(f"changed since applied: {', '.join(status.changed_since_applied)}")
    connection.rollback()


def check_drift(connection: Connection, status: Status) -> None:
    status.drift = verify.schema_drift(connection)
    if status.drift:
        status.attention.append(f"{_plural(len(status.drift), 'difference')} from the models")


def check_transitions(connection: Connection, status: Status) -> None:
    """Each expand/contract in flight (its sync trigger is on our table): what moves, since
    when, and the rows its backfill has left."""
    applied = history.applied_at(connection) if history.table_exists(connection) else {}
    pending = {entry["revision"] for entry in status.pending}
    for moving in transitions.in_flight(connection):
        todo = transitions.still_to_do(moving.column, moving.source)
        left = int(
            connection.scalar(
                text(f"SELECT count(*) FROM {transitions.quote(moving.table)} WHERE {todo}")
            )
            or 0
        )
        since = applied.get(moving.revision)
        # Its expand applied, a backfill has nothing left, unless a writer bypassed the trigger.
        stalled = bool(left) and moving.revision not in pending
        status.transitions.append(
            {
                "kind": moving.kind,
                "table": moving.table,
                "old": moving.old,
                "new": moving.column,
                "source": moving.source,
                "since_revision": moving.revision,
                "since": _iso(since),
                "rows_left": left,
                "stalled": stalled,
            }
        )
        if stalled:
            status.attention.append(
                f"{_plural(left, 'row')} of {moving.table}.{moving.column} not backfilled"
            )


def check_invalid_indexes(connection: Connection, status: Status) -> None:
    rows = connection.execute(INVALID_INDEXES, {"tables": list(project.OUR_TABLES)})
    status.invalid_indexes = [f"{row.idx} on {row.tbl}" for row in rows]
    if status.invalid_indexes:
        status.attention.append(f"INVALID: {', '.join(status.invalid_indexes)}")


def check_blocking_sessions(connection: Connection, status: Status) -> None:
    """Sessions whose open transaction on our tables would make DDL give up now."""
    status.blocking_sessions = [
        {
            "pid": row.pid,
            "application": row.application,
            "state": row.state,
            "age_seconds": round(float(row.age), 1),
            "query": " ".join(row.query.split()),
        }
        for row in sessions.holding_our_tables(connection)
    ]
    old = [s for s in status.blocking_sessions if s["age_seconds"] > status.blocking_after_seconds]
    if old:
        status.attention.append(
            f"{_plural(len(old), 'session')} would block DDL longer than the migrations' "
            f"lock_timeout: {', '.join(str(s['pid']) for s in old)}"
        )


def check_queue_table(connection: Connection, status: Status) -> None:
    """processing_jobs' dead tuples: each claim leaves one in the claim index until VACUUM."""
    if (jobs := connection.execute(VACUUM).first()) is None:
        return
    status.processing_jobs = {
        "live_tuples": jobs.n_live_tup,
        "dead_tuples": jobs.n_dead_tup,
        "last_autovacuum": _iso(jobs.last_autovacuum),
        "last_vacuum": _iso(jobs.last_vacuum),
    }
    if jobs.n_dead_tup > DEAD_TUPLES_ATTENTION:
        status.attention.append(
            f"processing_jobs has {jobs.n_dead_tup:,} dead tuples: claims slow until VACUUM"
        )


def check_queue_health(connection: Connection, status: Status) -> None:
    """Jobs per status, the oldest due job's wait, leases no worker rescued, recent failures."""
    if not connection.scalar(HAS_LEASES):
        return
    row = connection.execute(QUEUE_HEALTH, {"grace": PAST_LEASE_GRACE}).one()
    status.queue = {
        "counts": {
            job_status.value: int(row.counts.get(job_status, 0)) for job_status in JobStatus
        },
        "oldest_due_seconds": None
        if row.oldest_due_seconds is None
        else float(row.oldest_due_seconds),
        "past_lease": int(row.past_lease),
        "failed_last_hour": int(row.failed_last_hour),
    }
    if row.past_lease:
        status.attention.append(
            f"{_plural(int(row.past_lease), 'job')} past its lease with no worker rescuing it "
            "(is any worker running?)"
        )


def check_limits(connection: Connection, status: Status) -> None:
    """Paused keys and keys at their limit: their jobs wait by design, not for a worker."""
    states = limits.key_states(connection) or []
    status.limited_keys = len(states)
    for state in states:
        found = asdict(state) | {"state": state.describe()}
        if state.paused:
            status.paused_keys.append(found)
        elif state.at_limit:
            status.keys_at_limit.append(found)


def check_standbys(connection: Connection, status: Status) -> None:
    """Streaming standbys (pg_stat_replication) and how far behind each is."""
    status.max_replica_lag = options.options({})["max_replica_lag"]
    for row in connection.execute(throttle.STANDBYS):
        standby = {
            "name": row.name,
            "client_addr": None if row.client_addr is None else str(row.client_addr),
            "state": row.state,
            "replay_lag_seconds": row.replay_lag,
            "bytes_behind": row.bytes_behind,
        }
        status.standbys.append(standby)
        if status.max_replica_lag and row.replay_lag > status.max_replica_lag:
            status.attention.append(
                f"standby {row.name or row.pid} is {row.replay_lag:.1f} s behind: batched "
                "backfills wait for it"
            )


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _breaking(rows: int) -> str:
    return f"{_plural(rows, 'row')} {'breaks' if rows == 1 else 'break'} it"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def render(status: Status) -> str:
    mark = {True: "! ", False: "  "}
    at = ", ".join(status.current) or "base (no revision applied)"
    lines = [
        f"PostgreSQL {status.server_major}"
        + (
            "\n! A standby (in recovery): read-only, a deploy cannot run here. Point "
            "DIRECT_DATABASE_URL (or DATABASE_URL) at the primary, or give every host with "
            "?target_session_attrs=read-write."
            if status.in_recovery
            else ""
        ),
        f"{mark[status.current != status.head]}Revision: {at}; head {', '.join(status.head)}"
        + (" (up to date)" if status.current == status.head else ""),
    ]
    for problem in status.history_problems:
        lines += textwrap.wrap(
            f"! {problem}", width=100, subsequent_indent="      ", break_on_hyphens=False
        )
    for entry in status.pending:
        lines += textwrap.wrap(
            f"pending {entry['revision']}: Locks: {entry['locks']}",
            width=100,
            initial_indent="    ",
            subsequent_indent="      ",
            break_on_hyphens=False,
        )
    for found in status.pending_violations:
        counted = (
            f"{_breaking(found['rows'])} now: fix them before `make upgrade`, or it fails there"
            if found["rows"] is not None
            else f"rows not counted: {found['error']}"
        )
        lines += textwrap.wrap(
            f"! pending {found['revision']} adds {found['what']} on {found['table']}: {counted}",
            width=100,
            subsequent_indent="      ",
            break_on_hyphens=False,
        )
    if status.pending:
        lines.append("    run `make upgrade` (`make sql` shows the SQL first)")
    if status.changed_since_applied:
        lines.append(
            f"! Changed since applied: {', '.join(status.changed_since_applied)} "
            "(landed revisions are never edited: restore the file, fix forward in a new one)"
        )
    else:
        lines.append("  Applied revision files: unchanged since applied")
    if status.without_checksum:
        lines.append(
            f"    no checksum recorded for {', '.join(status.without_checksum)} "
            "(applied before the migration history existed)"
        )
    if status.drift is None:
        lines.append("  Drift: not compared (the database is not at head)")
    elif status.drift:
        lines.append("! Drift from the models:")
        lines += [f"    {line}" for line in status.drift]
    else:
        lines.append("  Drift: none (live schema matches the models)")
    lines += _transition_lines(status)
    if status.invalid_indexes:
        lines.append(
            f"! INVALID indexes: {', '.join(status.invalid_indexes)} (a failed concurrent "
            "build: the revision's re-run rebuilds it)"
        )
    else:
        lines.append("  INVALID indexes: none")
    lines.append(f"  Migration lock: {status.migration_lock_holder or 'free'}")
    if status.blocking_sessions:
        old = any(
            s["age_seconds"] > status.blocking_after_seconds for s in status.blocking_sessions
        )
        lines.append(f"{mark[old]}Sessions holding our tables (would block DDL now):")
        lines += [
            f"    pid {s['pid']} ({s['application'] or 'no application_name'}, {s['state']}, "
            f"transaction {s['age_seconds']:.1f} s old): {s['query'][:120]}"
            for s in status.blocking_sessions
        ]
    else:
        lines.append("  Sessions holding our tables: none")
    if status.processing_jobs:
        jobs = status.processing_jobs
        dead = jobs["dead_tuples"] > DEAD_TUPLES_ATTENTION
        lines.append(
            f"{mark[dead]}processing_jobs: {jobs['dead_tuples']:,} dead tuples, "
            f"{jobs['live_tuples']:,} live; last autovacuum {jobs['last_autovacuum'] or 'never'}"
            f", last vacuum {jobs['last_vacuum'] or 'never'}"
        )
    if status.queue:
        queue = status.queue
        counts = ", ".join(f"{n:,} {name}" for name, n in queue["counts"].items())
        oldest = queue["oldest_due_seconds"]
        waiting = "none due" if oldest is None else f"oldest due job waiting {oldest:,.0f} s"
        lines.append(f"{mark[bool(queue['past_lease'])]}Queue: {counts}")
        lines.append(
            f"    {waiting}; {queue['past_lease']:,} past their lease; "
            f"{queue['failed_last_hour']:,} failed in the last hour"
            + (
                " (make jobs lists failed jobs, make retry puts them back)"
                if queue["failed_last_hour"]
                else ""
            )
        )
    if status.limited_keys:
        lines.append(
            f"  Limits: {_plural(status.limited_keys, 'key')} limited or paused "
            f"({len(status.paused_keys):,} paused, {len(status.keys_at_limit):,} at its limit; "
            "make limits shows each)"
        )
    lines.extend(f"    {key['state']}" for key in status.paused_keys + status.keys_at_limit)
    if not status.standbys:
        lines.append("  Standbys: none streaming from this server")
    for standby in status.standbys:
        late = bool(status.max_replica_lag) and (
            standby["replay_lag_seconds"] > status.max_replica_lag
        )
        behind = (
            "positions hidden (needs pg_monitor)"
            if standby["bytes_behind"] is None
            else f"replay {standby['replay_lag_seconds']:.1f} s behind, "
            f"{standby['bytes_behind']:,.0f} bytes of WAL to apply"
        )
        lines.append(
            f"{mark[late]}Standby {standby['name'] or '(unnamed)'} "
            f"({standby['client_addr'] or 'local socket'}, {standby['state']}): {behind}"
        )
    verdict = f"Needs attention: {'; '.join(status.attention)}" if status.attention else "All clear"
    return "\n".join([*lines, f"{verdict} ({status.seconds:.2f} s)"])


def _transition_lines(status: Status) -> list[str]:
    if not status.transitions:
        return ["  Transitions in flight (expand/contract): none"]
    lines = [
        "  Transitions in flight (expand/contract; once every writer uses the new shape, remove "
        "the marker and `make revision` writes the contract):"
    ]
    for moving in status.transitions:
        what = (
            f"{moving['old']} -> {moving['new']}"
            if moving["old"]
            else f"{moving['new']} from {moving['source']}"
        )
        since = f"since {moving['since_revision']}" + (
            f" ({moving['since']})" if moving["since"] else ""
        )
        mark = "!" if moving["stalled"] else " "
        lines.append(
            f"{mark}   {moving['kind']} {moving['table']}: {what}, {since}, "
            f"{moving['rows_left']:,} rows left to backfill"
        )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make status", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--blocking-after",
        type=float,
        default=BLOCKING_AFTER_SECONDS,
        metavar="SECONDS",
        help="a transaction on our tables older than this needs attention (default: %(default)s,"
        " the migrations' lock_timeout)",
    )
    args = parser.parse_args(argv)
    try:
        connection = open_connection("status")
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    script = ScriptDirectory.from_config(project.alembic_config())
    with connection:
        connection.exec_driver_sql(
            f"SET lock_timeout = '{STATUS_LOCK_TIMEOUT}'; "
            f"SET statement_timeout = '{STATUS_STATEMENT_TIMEOUT}'"
        )
        connection.commit()
        try:
            status = collect(connection, script, args.blocking_after)
        except SQLAlchemyError as error:
            orig = getattr(error, "orig", None) or error
            print(f"Cannot read the status: {' '.join(str(orig).split())}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    print(json.dumps(asdict(status), indent=2) if args.json else render(status))
    return 1 if status.attention else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
