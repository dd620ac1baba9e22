"""The migration history: one row per upgrade, downgrade and stamp step, in our own table
(models/migration_history.py, created by revision 0009), written from alembic/env.py.

- **A success** is written in the step's own transaction, from Alembic's `on_version_apply`
  callback: it commits with the version table's update, or not at all. A step runs from the
  moment the previous one was recorded (or the run began): its duration includes its commit.
- **A failure** is written on a separate autocommit connection: the step's transaction has
  rolled back, and the record must not go with it. Each attempt of a lock-timeout retry counts.
- **Steps before the table exists** (a first `upgrade head` from base) are kept in memory and
  written as soon as it does, so a fresh database has its whole history.
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, insert, select, text

from media_db.deploy import environment, project
from models import Base, MigrationHistory

log = logging.getLogger(__name__)

TABLE = Base.metadata.tables[MigrationHistory.__tablename__]
PENDING = "media_analysis_history_pending"  # offline: the session's rows waiting for TABLE
STEP_STARTED = "media_analysis.step_started"  # offline: a session setting, never server-wide
ERROR_SHOWN = 1_000  # characters of a failure's message kept


def checksum(path: str | Path) -> str:
    """sha256 of the file's code without docstrings, normalised by ast.unparse."""
    tree = ast.parse(Path(path).read_text())
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
    `recording`."""

    def __init__(self) -> None:
        self.waiting: list[dict[str, Any]] = []  # successes recorded before the table exists
        self.plan: list[MigrationInfo] = []
        self.done = 0
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
        self.done = 0
        self._restart_clock()
        try:
            yield
        except Exception as error:
            if self.done < len(self.plan) and migration_context.connection is not None:
                self._record_failure(migration_context, self.plan[self.done], error)
            raise

    def on_version_apply(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: set[str],
        run_args: Mapping[str, Any],
    ) -> None:
        row = self._row(ctx, step, "succeeded")
        self.done += 1
        if ctx.as_sql:
            ctx.execute(offline_insert(row))
        else:
            assert ctx.connection is not None
            self.waiting.append(row)
            if table_exists(ctx.connection):
                ctx.connection.execute(insert(TABLE), self.waiting)
                self.waiting = []
            log.info("%s %s took %s", row["direction"].capitalize(), row["revision"], _seconds(row))
        self._restart_clock()

    def _restart_clock(self) -> None:
        self.started, self.clock = datetime.now(UTC), time.monotonic()

    def _row(self, ctx: MigrationContext, info: MigrationInfo, outcome: str) -> dict[str, Any]:
        rev = revision(info)
        return {
            "revision": rev,
            "direction": direction(info),
            "started_at": self.started,
            "finished_at": datetime.now(UTC),
            "duration_ms": round((time.monotonic() - self.clock) * 1000),
            "outcome": outcome,
            "client_host": None if ctx.as_sql else socket.gethostname(),
            "project_version": project_version(),
            "checksum": _checksum_of(ctx.script, rev),
            "mode": "offline" if ctx.as_sql else "online",
        }

    def _record_failure(
        self, ctx: MigrationContext, info: MigrationInfo, error: BaseException
    ) -> None:
        row = {**self._row(ctx, info, "failed"), "error": _one_line(error)}
        log.warning(
            "%s %s failed after %s", row["direction"].capitalize(), row["revision"], _seconds(row)
        )
        assert ctx.connection is not None
        try:
            with ctx.connection.engine.connect() as side, side.begin():
                if table_exists(side):
                    side.execute(insert(TABLE), [*self.waiting, row])
                    self.waiting = []
        except Exception as side_error:  # the migration's own error matters more
            cause = getattr(side_error, "orig", None) or side_error
            log.warning(
                "Could not record the failure in %s: %s", TABLE.name, " ".join(str(cause).split())
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
