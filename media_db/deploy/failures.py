"""A failed migration run ends with one line: what failed, the revision the database is at, what
the failure left behind, and the command to run next. Tracebacks only with `-x debug=true`.

"Left behind" is measured, not assumed: the catalog of our tables is snapshotted after every
step that went through and compared with the catalog once the run has failed (an INVALID index
from a concurrent build, a constraint committed by a non-atomic downgrade). A revision that
commits as it goes (an autocommit block) may also have committed data: that is said too.
"""

import inspect
import logging
import os
import shlex
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, PendingRollbackError, ResourceClosedError

from media_db import settings
from media_db.deploy import catalog, environment, options, project
from media_db.deploy.project import OUR_TABLES

log = logging.getLogger(__name__)

KINDS = {
    "columns": "column",
    "constraints": "constraint",
    "indexes": "index",
    "triggers": "trigger",
}


class LeftBehind:
    """What a failure would leave behind, and where the run stands: the revision reached and our
    catalog after the last step that went through (Alembic's on_version_apply), and the command
    that would finish the job."""

    def __init__(self, script: ScriptDirectory, x_arguments: Mapping[str, str]) -> None:
        self.script = script
        self.x_arguments = dict(x_arguments)
        self.context: MigrationContext | None = None
        self.command = ""
        self.started = False
        self.heads: tuple[str, ...] = ()
        self.after_last_step: catalog.Catalog = {}
        self.next_command = ""

    def prepare(self, migration_context: MigrationContext, command: str) -> None:
        """Before the migration lock: enough to report a failure that comes before any step."""
        self.context, self.command = migration_context, command
        self._plan()
        # No transaction may stay open while we queue for the lock: a CREATE INDEX
        # CONCURRENTLY of the migrator ahead of us would wait for its snapshot.
        migration_context.bind.rollback()  # type: ignore[union-attr]

    def begin(self) -> None:
        """Before the first attempt, under the lock (retries keep what the first one saw)."""
        if self.context is None or self.started:
            return
        self.started = True
        self._plan()
        self.after_last_step = _ours(self.context.bind)

    def _plan(self) -> None:
        assert self.context is not None
        self.heads = self.context.get_current_heads()
        plan = environment.planned_steps(self.context)
        destination = str(self.context.opts.get("destination_rev"))
        if self.command == "upgrade" and destination in ("head", "heads"):
            target = destination
        else:
            target = ", ".join(plan[-1].to_revisions) if plan else destination
        options = [f"-x {shlex.quote(f'{k}={v}')}" for k, v in self.x_arguments.items()]
        self.next_command = " ".join(
            [_alembic(), *options, self.command, shlex.quote(target or "base")]
        )

    def applied(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[str],
        run_args: Mapping[str, Any],
    ) -> None:
        if ctx.as_sql:
            return  # offline: no database to read, and psql reports its own failures
        self.heads = tuple(sorted(heads))
        self.after_last_step = _ours(ctx.bind)

    def failed_step(self, heads: tuple[str, ...]) -> Any:
        """The step the run was on when it failed: the first one left from `heads`."""
        if self.context is None or not self.started:
            return None
        steps = list(self.context.opts["fn"](heads, self.context))
        return steps[0] if steps else None


@contextmanager
def reported(run: LeftBehind, engine: Engine, debug: bool) -> Iterator[None]:
    """Turn any failure of a changing command into its one-line summary."""
    try:
        yield
    except Exception as error:
        if debug:
            log.error("Traceback (shown because of -x debug=true):", exc_info=error)
        raise CommandError(_summary(run, engine, error)) from None


def _summary(run: LeftBehind, engine: Engine, error: BaseException) -> str:
    heads, now, unreadable = _state(engine)
    at = heads if heads is not None else run.heads
    shown = environment.describe(at, run.script)
    if not run.started:
        # Refused or stopped before any step: the refusal says what to do, if it is one.
        where = (
            f"the database is at revision {shown}, unchanged"
            if heads is not None
            else f"the database did not answer afterwards ({unreadable})"
        )
        if isinstance(error, CommandError):
            return f"{_cause(error)} ({where})."
        next_run = f"; next: run `{run.next_command}` again" if run.next_command else ""
        return f"{run.command} did not start: {_cause(error)}; {where}{next_run}."
    step = run.failed_step(at)
    parts = [f"{step.short_log} failed: {_cause(error)}" if step else _cause(error)]
    if heads is None:
        parts.append(
            f"the database did not answer afterwards ({unreadable}): its revision was {shown} "
            "when last seen, and what the failure left behind could not be checked"
        )
    else:
        parts.append(f"the database is at revision {shown}")
        parts.append(_left_behind(run.after_last_step, now or {}, step))
    parts.append(f"next: once the cause is dealt with, run `{run.next_command}` again")
    return "; ".join(parts) + "."


def _alembic() -> str:
    """Alembic as the user can run it where they are, outside make: the checkout's
    .venv/bin/alembic when there is one (make puts it on PATH, a shell may not); with make's
    embedded server, plain `alembic` would find no database configured; the deploy options this
    run took from the environment (a consent among them) go with it, or it would be refused."""
    venv = project.folder() / ".venv" / "bin" / "alembic"
    command = [".venv/bin/alembic" if venv.exists() else "alembic"]
    if os.environ.get(settings.EMBEDDED_FALLBACK):
        command.insert(0, "DATABASE_URL=$(make -s db-url)")
    given = [
        f"{option.environment}={shlex.quote(os.environ[option.environment])}"
        for option in options.OPTIONS.values()
        if os.environ.get(option.environment)
    ]
    return " ".join([*given, *command])


SUMMARY_LOCK_TIMEOUT = "2s"


def _state(engine: Engine) -> tuple[tuple[str, ...] | None, catalog.Catalog | None, str]:
    """The revision and our catalog, read afresh: the migration connection may be dead."""
    try:
        with engine.connect() as connection:
            # A fresh session: bound its waits as the migration's own are (never server-wide).
            connection.exec_driver_sql(f"SET lock_timeout = '{SUMMARY_LOCK_TIMEOUT}'")
            heads: tuple[str, ...] = ()
            if connection.scalar(text("SELECT to_regclass(:t)"), {"t": project.VERSION_TABLE}):
                versions = connection.scalars(
                    text(f"SELECT version_num FROM {project.VERSION_TABLE}")
                )
                heads = tuple(sorted(versions))
            return heads, _ours(connection), ""
    except DBAPIError as error:
        return None, None, _cause(error)


def _ours(connection: Connection | None) -> catalog.Catalog:
    # Names and validity only: a snapshot that locks no table never waits behind a session
    # (n8n's or a blocker's) holding one, where the step itself may need no table lock at all.
    assert connection is not None
    return catalog.snapshot(connection, tables=OUR_TABLES, definitions=False)


def _left_behind(before: catalog.Catalog, now: catalog.Catalog, step: Any) -> str:
    changes = []
    for name in sorted(OUR_TABLES):
        was, is_ = before.get(name), now.get(name)
        if was is None or is_ is None:
            if (was is None) != (is_ is None):
                changes.append(f"table {name} {'created' if was is None else 'dropped'}")
            continue
        for attribute, label in KINDS.items():
            old, new = getattr(was, attribute), getattr(is_, attribute)
            for key in sorted(old.keys() | new.keys()):
                if key not in new:
                    changes.append(f"{label} {key} dropped")
                elif old.get(key) != new[key]:
                    changes.append(f"{label} {key} {'changed' if key in old else 'added'}")
                    changes[-1] += _validity(str(new[key]))
    if (
        not changes
        and step is not None
        and commits_as_it_goes(step.revision.module, step.is_upgrade)
    ):
        changes.append(
            f"what revision {step.revision.revision} committed as it went (e.g. batches of "
            "updated rows; re-running it is safe)"
        )
    return "left behind: " + (", ".join(changes) if changes else "nothing")


def _validity(definition: str) -> str:
    if "(INVALID" in definition:
        return " (INVALID)"
    return " (NOT VALID)" if definition.endswith("NOT VALID") else ""


def commits_as_it_goes(module: ModuleType, upgrade: bool) -> bool:
    """Does this direction of a revision commit part of its work (an autocommit block)?"""
    return "autocommit_block" in inspect.getsource(module.upgrade if upgrade else module.downgrade)


def _cause(error: BaseException) -> str:
    # A dead connection fails again in cleanup code: report what killed it, not the echo.
    while isinstance(error, PendingRollbackError | ResourceClosedError) and error.__context__:
        error = error.__context__
    if isinstance(error, DBAPIError) and error.orig is not None:
        text = str(error.orig)
    elif isinstance(error, CommandError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split()).rstrip(".")
