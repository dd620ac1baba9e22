"""The migration history: one row per upgrade, downgrade and stamp step, in our own table
(models/migration_history.py, created by revision 0009), written from alembic/env.py.

- **A success** is written in the step's own transaction, from Alembic's `on_version_apply`
  callback: it commits with the version table's update, or not at all. A step runs from the
  moment the previous one was recorded (or the run began): its duration includes its commit.
- **A failure** is written on a separate autocommit connection: the step's transaction has
  rolled back, and the record must not go with it. Each attempt of a lock-timeout retry counts.
  The step that failed is the first the version table still lacks (a step whose history write
  or commit failed did not happen); lock failures name the sessions holding our tables. When
  the table cannot take the row now (a lock on it), it goes with the next step recorded.
- **An interrupted attempt** (kill -9, a lost connection): before each step a row saying it was
  interrupted is written, which the step's outcome replaces; the next run reports those left.
- **Steps before the table exists** (a first `upgrade head` from base) are kept in memory and
  written as soon as it does, so a fresh database has its whole history. What the version table
  said was applied before the run is recorded then too, late and marked so (RECORDED_LATE).
- **Offline (`--sql`)**: each step's row is an INSERT in the script, inside a DO block that
  keeps it in a session temporary table until the history table exists (the same catch-up, in
  SQL). The script records the server's role and client address when psql applies it; the
  host that applies it is unknown when it is written (client_host NULL).
- **The checksum** is sha256 over the revision's code with its docstrings removed, as
  `ast.unparse` prints it: reformatting (ruff format, quotes, wrapping, trailing commas) and
  comments do not change it; any change to what runs does, module constants included (0007's
  INDEXES). `ast.unparse` is stable within a Python minor, which pyproject.toml pins; a move to
  another minor would show as a changed file, checked by `make status` before trusting it.
"""

import ast
import hashlib
import logging
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, delete, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from media_db.deploy import environment, project, sessions
from media_db.models import Base, MigrationHistory

log = logging.getLogger(__name__)

TABLE = Base.metadata.tables[MigrationHistory.__tablename__]
PENDING = "media_analysis_history_pending"  # offline: the session's rows waiting for TABLE
STEP_STARTED = "media_analysis.step_started"  # offline: a session setting, never server-wide
ERROR_SHOWN = 1_000  # characters of a failure's message kept
AST_ATTEMPTS = 5
# The error of a step's row until the step's outcome replaces it: left so by a kill -9.
INTERRUPTED = (
    "interrupted: the attempt stopped here before this step's outcome was recorded "
    "(alembic killed, or its connection to the server lost)"
)
# The error of a row written for a revision applied before the table existed (outcome
# succeeded): its times are when it was recorded, its checksum that of the file then.
RECORDED_LATE = (
    "recorded late: applied before this history existed; when, by whom and for how long are "
    "unknown, and the checksum is of the file when recorded"
)
LOCK_ERRORS = ("55P03", "40P01")  # lock not available, deadlock: the blockers are named


def _parsed(source: str) -> ast.Module:
    """ast.parse, tried again when CPython 3.11.7 (the pinned minor's current patch here) raises
    "AST constructor recursion depth mismatch": another thread building Python objects at the
    same moment trips its per-interpreter counter (gh-106905, fixed in 3.11.8). Seen twice in
    a loaded suite run, as a failed migration step."""
    for attempt in range(AST_ATTEMPTS):
        try:
            return ast.parse(source)
        except SystemError:
            if attempt == AST_ATTEMPTS - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def checksum(path: str | Path) -> str:
    """sha256 of the file's code without docstrings, normalised by ast.unparse."""
    tree = _parsed(Path(path).read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()


@cache
def project_version() -> str:
    """The installed package's version, and the commit when the project folder is a git
    checkout (the revisions' files are the project folder's)."""
    version = project.version()
    try:
        commit = subprocess.run(
            ["git", "-C", str(project.folder()), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}"


def direction(info: MigrationInfo) -> str:
    if info.is_stamp:
        return "stamp"
    return "upgrade" if info.is_upgrade else "downgrade"


def revision(info: MigrationInfo) -> str:
    """The revision the step applies, removes, or stamps to ('base' for a stamp to base)."""
    ids = info.down_revision_ids if info.is_stamp and not info.is_upgrade else info.up_revision_ids
    return ", ".join(ids) or "base"


def _checksum_of(script: ScriptDirectory | None, rev: str) -> str | None:
    found = script.get_revision(rev) if script is not None and rev != "base" else None
    return checksum(found.path) if found is not None else None


def table_exists(connection: Connection) -> bool:
    return connection.scalar(text("SELECT to_regclass(:t)"), {"t": TABLE.name}) is not None


class Recorder:
    """Alembic's `on_version_apply` callback (env.py hands it over); env.py runs each attempt in
    `recording`.

    Before each step, while the table exists, a row saying the step was interrupted is written
    (on a side connection for an attempt's first step, else in the previous step's transaction):
    the step's own transaction replaces it with its success, a failure that is caught replaces it
    with the error, and a kill -9 leaves it. Which step failed is read from the version table, not
    assumed: a step whose history write (or commit) failed did not happen."""

    def __init__(self, settings_sql: Sequence[str] = ()) -> None:
        self.settings_sql = list(settings_sql)  # the migration session's timeouts, for side ones
        # Rows for the table not in it yet: steps before it existed, failures it could not take.
        self.waiting: list[dict[str, Any]] = []
        self.stale_markers: list[int] = []  # interrupted-rows those waiting failures replace
        self.plan: list[MigrationInfo] = []
        self.done = 0
        self.markers: dict[int, int] = {}  # plan index -> id of the step's interrupted-row
        # What the open step transaction wrote, put back if it does not commit.
        self.in_flight: tuple[list[dict[str, Any]], list[int]] = ([], [])
        self.attempts = 0
        # The version table's revisions when the run began without the history table: recorded
        # late once this run creates it.
        self.applied_before: tuple[str, ...] | None = None
        self.started = datetime.now(UTC)
        self.clock = time.monotonic()

    def current(self) -> MigrationInfo | None:
        """The step running now, if any."""
        return self.plan[self.done] if self.done < len(self.plan) else None

    @contextmanager
    def recording(self, migration_context: MigrationContext) -> Iterator[None]:
        """One attempt at running the migrations: on failure, the step that failed is recorded
        on a separate connection, then the error goes on."""
        command = environment.running_command(migration_context)
        self.plan = (
            [step.info for step in environment.planned_steps(migration_context)]
            if command in environment.CHANGING_COMMANDS
            else []
        )
        self.done, self.markers, self.in_flight = 0, {}, ([], [])
        self._restart_clock()
        online = migration_context.connection is not None and not migration_context.as_sql
        try:
            if online and self.plan:
                self._begin_attempt(migration_context)
            yield
        except Exception as error:
            if online and self.plan:
                self._record_failure(migration_context, error)
            raise

    @contextmanager
    def _side(self, ctx: MigrationContext) -> Iterator[Connection]:
        """An autocommit session beside the migration's, its waits bounded as the migration's."""
        assert ctx.connection is not None
        with ctx.connection.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as side:
            for statement in self.settings_sql:
                side.exec_driver_sql(statement)
            yield side

    def _begin_attempt(self, ctx: MigrationContext) -> None:
        self.attempts += 1
        with self._side(ctx) as side:
            exists = table_exists(side)
            if self.attempts == 1 and not exists:
                self.applied_before = tuple(ctx.get_current_heads())
            elif self.attempts == 1:
                _report_interrupted(side)
            if exists:
                self.markers[0] = self._insert_marker(side, ctx, self.plan[0])

    def _insert_marker(self, connection: Connection, ctx: MigrationContext, info: Any) -> int:
        row = {**self._row(ctx, info, "failed"), "duration_ms": 0, "error": INTERRUPTED}
        row["finished_at"] = row["started_at"] = datetime.now(UTC)
        return int(connection.execute(insert(TABLE).returning(TABLE.c.id), row).scalar_one())

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: set[str],
        run_args: Mapping[str, Any],
    ) -> None:
        row = self._row(ctx, step, "succeeded")
        if ctx.as_sql:
            ctx.execute(offline_insert(row))
        else:
            assert ctx.connection is not None
            # Alembic began this step's transaction once the previous one had committed.
            self.in_flight = ([], [])
            if table_exists(ctx.connection):
                rows = [*self._recorded_late(ctx), *self.waiting, row]
                stale = [*self.stale_markers, *filter(None, [self.markers.get(self.done)])]
                if stale:
                    ctx.connection.execute(delete(TABLE).where(TABLE.c.id.in_(stale)))
                ctx.connection.execute(insert(TABLE), rows)
                self.in_flight = (rows[:-1], self.stale_markers)
                self.waiting, self.stale_markers = [], []
                if self.done + 1 < len(self.plan):
                    following = self.plan[self.done + 1]
                    self.markers[self.done + 1] = self._insert_marker(
                        ctx.connection, ctx, following
                    )
            else:
                self.waiting.append(row)
            log.info("%s %s took %s", row["direction"].capitalize(), row["revision"], _seconds(row))
        self.done += 1
        self._restart_clock()

    def _recorded_late(self, ctx: MigrationContext) -> list[dict[str, Any]]:
        """Rows for what the version table said was applied when this run began, the table not
        there yet (oldest first); once."""
        if not self.applied_before or ctx.script is None:
            return []
        applied = list(ctx.script.iterate_revisions(self.applied_before, "base"))
        self.applied_before = None
        now = datetime.now(UTC)
        return [
            {
                **self._row(ctx, (script.revision, "upgrade"), "succeeded"),
                "started_at": now,
                "finished_at": now,
                "duration_ms": 0,
                "error": RECORDED_LATE,
            }
            for script in reversed(applied)
            if script is not None
        ]

    def _restart_clock(self) -> None:
        self.started, self.clock = datetime.now(UTC), time.monotonic()

    def _row(
        self, ctx: MigrationContext, step: MigrationInfo | tuple[str, str], outcome: str
    ) -> dict[str, Any]:
        """A row of `step` (a MigrationInfo, or a revision and its direction)."""
        rev, way = step if isinstance(step, tuple) else (revision(step), direction(step))
        return {
            "revision": rev,
            "direction": way,
            "started_at": self.started,
            "finished_at": datetime.now(UTC),
            "duration_ms": round((time.monotonic() - self.clock) * 1000),
            "outcome": outcome,
            "error": None,
            "client_host": None if ctx.as_sql else socket.gethostname(),
            "project_version": project_version(),
            "checksum": _checksum_of(ctx.script, rev),
            "mode": "offline" if ctx.as_sql else "online",
        }

    def _record_failure(self, ctx: MigrationContext, error: BaseException) -> None:
        """The failed step's row, on a side connection, in place of its interrupted-row; kept
        for the next write when the table cannot take it now."""
        failed, blockers = self.done, ""
        try:
            with self._side(ctx) as side:
                failed = self._failed_step(ctx, side)
                if getattr(getattr(error, "orig", None), "sqlstate", None) in LOCK_ERRORS:
                    held = sessions.holding_our_tables(side)
                    blockers = (
                        " (blocking: "
                        + ("; ".join(map(sessions.one_line, held)) or "no session now")
                        + ")"
                    )
        except DBAPIError:
            pass  # the server may be gone: record what is known, if anything can be
        info = self.plan[min(failed, len(self.plan) - 1)]
        row = {
            **self._row(ctx, info, "failed"),
            "error": (_one_line(error) + blockers)[:ERROR_SHOWN],
        }
        log.warning(
            "%s %s failed after %s", row["direction"].capitalize(), row["revision"], _seconds(row)
        )
        stale = [*self.stale_markers, *filter(None, [self.markers.get(failed)])]
        try:
            with self._side(ctx) as side:
                if table_exists(side):
                    if stale:
                        side.execute(delete(TABLE).where(TABLE.c.id.in_(stale)))
                    side.execute(insert(TABLE), [*self.waiting, row])
                    self.waiting, self.stale_markers = [], []
                    return
        except DBAPIError as side_error:  # the migration's own error matters more
            cause = getattr(side_error, "orig", None) or side_error
            log.warning(
                "Could not record the failure in %s now (%s): it is written with the next step "
                "this run records, if any",
                TABLE.name,
                " ".join(str(cause).split()),
            )
        self.waiting.append(row)
        self.stale_markers = stale

    def _failed_step(self, ctx: MigrationContext, side: Connection) -> int:
        """The plan's index of the step that failed: the first one the version table says is
        still to do. If it is the step last recorded, its transaction did not commit: what it
        wrote goes back to waiting."""
        heads = project.current_heads(side)
        remaining = list(ctx.opts["fn"](heads, ctx)) if "fn" in ctx.opts else []
        if not remaining:
            return self.done
        first = (revision(remaining[0].info), direction(remaining[0].info))
        index = next(
            (i for i, info in enumerate(self.plan) if (revision(info), direction(info)) == first),
            self.done,
        )
        if index < self.done:
            rows, stale = self.in_flight
            self.waiting, self.stale_markers = [*rows, *self.waiting], [*stale, *self.stale_markers]
            self.in_flight = ([], [])
        return index


def _report_interrupted(connection: Connection) -> None:
    """Log the interrupted attempts the last runs left (nothing recorded after them)."""
    found = connection.execute(
        select(TABLE.c.revision, TABLE.c.direction, TABLE.c.started_at)
        .where(TABLE.c.error == INTERRUPTED)
        .where(
            TABLE.c.id
            > select(func.coalesce(func.max(TABLE.c.id), 0))
            .where(TABLE.c.error.is_distinct_from(INTERRUPTED))
            .scalar_subquery()
        )
        .order_by(TABLE.c.id)
    ).all()
    for rev, way, started in found:
        log.warning(
            "Found an interrupted attempt: %s %s, started %s, never finished (recorded as failed)",
            way,
            rev,
            f"{started:%Y-%m-%d %H:%M:%S %Z}",
        )


def _seconds(row: Mapping[str, Any]) -> str:
    ms = row["duration_ms"]
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _one_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None)  # a DBAPI error without SQLAlchemy's SQL and parameters
    return " ".join(str(orig or error).split())[:ERROR_SHOWN]


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def offline_start() -> str:
    """The offline script's first statement: the first step starts now."""
    return f"SELECT set_config('{STEP_STARTED}', clock_timestamp()::text, false)"


def offline_insert(row: Mapping[str, Any]) -> str:
    """One DO block: the step's row goes to the session's pending table, then every pending row
    to the history table if it exists by now; the next step starts."""
    values = ", ".join(
        _literal(row[name]) for name in ("revision", "direction", "project_version", "checksum")
    )
    started = f"current_setting('{STEP_STARTED}')::timestamptz"
    return f"""DO $$
BEGIN
    IF to_regclass('pg_temp.{PENDING}') IS NULL THEN
        CREATE TEMPORARY TABLE {PENDING} (
            seq serial, revision text, direction text, project_version text, checksum text,
            started_at timestamptz, finished_at timestamptz);
    END IF;
    INSERT INTO pg_temp.{PENDING}
        (revision, direction, project_version, checksum, started_at, finished_at)
    VALUES ({values}, {started}, clock_timestamp());
    PERFORM set_config('{STEP_STARTED}', clock_timestamp()::text, false);
    IF to_regclass('{TABLE.name}') IS NOT NULL THEN
        INSERT INTO {TABLE.name} (revision, direction, started_at, finished_at, duration_ms,
            outcome, project_version, checksum, mode)
        SELECT revision, direction, started_at, finished_at,
            round(extract(epoch FROM finished_at - started_at) * 1000), 'succeeded',
            project_version, checksum, 'offline'
        FROM pg_temp.{PENDING} ORDER BY seq;
        DELETE FROM pg_temp.{PENDING};
    END IF;
END
$$"""


def applied_checksums(connection: Connection) -> dict[str, str | None]:
    """The checksum recorded when each revision was last applied (upgraded or stamped to)."""
    latest = (
        select(TABLE.c.revision, TABLE.c.checksum)
        .where(TABLE.c.outcome == "succeeded", TABLE.c.direction.in_(("upgrade", "stamp")))
        .order_by(TABLE.c.revision, TABLE.c.finished_at.desc(), TABLE.c.id.desc())
        .distinct(TABLE.c.revision)
    )
    return {rev: sum_ for rev, sum_ in connection.execute(latest)}


def applied_at(connection: Connection) -> dict[str, datetime]:
    """When each revision was last applied (upgraded or stamped to)."""
    latest = (
        select(TABLE.c.revision, func.max(TABLE.c.finished_at))
        .where(TABLE.c.outcome == "succeeded", TABLE.c.direction.in_(("upgrade", "stamp")))
        .group_by(TABLE.c.revision)
    )
    return {rev: at for rev, at in connection.execute(latest)}
