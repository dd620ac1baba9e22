"""A failed migration run ends with one line: what failed, the revision the database is at, what
the failure left behind, and the command to run next. Tracebacks only with `-x debug=true`.

"Left behind" is measured, not assumed: the catalog of our tables is snapshotted after every
step that went through and compared with the catalog once the run has failed (an INVALID index
from a concurrent build, a constraint committed by a non-atomic downgrade). A revision that
commits as it goes (an autocommit block) may also have committed data: that is said too.
"""

import inspect
import logging
import shlex
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from media_db import catalog, migrations
from models import Base

log = logging.getLogger("alembic.env")

OUR_TABLES = set(Base.metadata.tables)
KINDS = {
    "columns": "column",
    "constraints": "constraint",
    "indexes": "index",
    "triggers": "trigger",
}


class Progress:
    """Where a run stands: the revision reached and our catalog after the last step that went
    through (Alembic's on_version_apply), and the command that would finish the job."""

    def __init__(self, script: ScriptDirectory, x_arguments: Mapping[str, str]) -> None:
        self.script = script
        self.x_arguments = dict(x_arguments)
        self.context: MigrationContext | None = None
        self.heads: tuple[str, ...] = ()
        self.after_last_step: catalog.Catalog = {}
        self.next_command = ""

    def begin(self, migration_context: MigrationContext, command: str) -> None:
        """Before the first attempt (retries keep what the first one saw)."""
        if self.context is not None:
            return
        self.context = migration_context
        self.heads = migration_context.get_current_heads()
        self.after_last_step = _ours(migration_context.connection)
        plan = migrations.planned_steps(migration_context)
        destination = str(migration_context.opts.get("destination_rev"))
        if command == "upgrade" and destination in ("head", "heads"):
            target = destination
        else:
            target = ", ".join(plan[-1].to_revisions) if plan else destination
        options = [f"-x {shlex.quote(f'{k}={v}')}" for k, v in self.x_arguments.items()]
        self.next_command = " ".join(["alembic", *options, command, target or "base"])

    def applied(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[str],
        run_args: Mapping[str, Any],
    ) -> None:
        self.heads = tuple(sorted(heads))
        self.after_last_step = _ours(ctx.connection)

    def failed_step(self, heads: tuple[str, ...]) -> Any:
        """The step the run was on when it failed: the first one left from `heads`."""
        if self.context is None:
            return None
        steps = list(self.context.opts["fn"](heads, self.context))
        return steps[0] if steps else None


@contextmanager
def reported(progress: Progress, engine: Engine, debug: bool) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        if isinstance(error, CommandError) and progress.context is None:
            raise  # refused before any step (lock wait, data-loss guard): it says so itself
        if debug:
            log.error("Traceback (shown because of -x debug=true):", exc_info=error)
        raise CommandError(_summary(progress, engine, error)) from None


def _summary(progress: Progress, engine: Engine, error: BaseException) -> str:
    heads, now, unreadable = _state(engine)
    at = heads if heads is not None else progress.heads
    step = progress.failed_step(at)
    what = step.short_log if step else None
    parts = [f"{what} failed: {_cause(error)}" if what else _cause(error)]
    shown = migrations.describe(at, progress.script)
    if heads is None:
        last = f"was at revision {shown} when last seen" if progress.context else "is unknown"
        parts.append(
            f"the database did not answer afterwards ({unreadable}): its revision {last}, "
            "and what the failure left behind could not be checked"
        )
    else:
        parts.append(f"the database is at revision {shown}")
        parts.append(_left_behind(progress.after_last_step, now or {}, step))
    if progress.next_command:
        parts.append(f"next: once the cause is dealt with, run `{progress.next_command}` again")
    return "; ".join(parts) + "."


def _state(engine: Engine) -> tuple[tuple[str, ...] | None, catalog.Catalog | None, str]:
    """The revision and our catalog, read afresh: the migration connection may be dead."""
    try:
        with engine.connect() as connection:
            heads: tuple[str, ...] = ()
            if connection.scalar(text("SELECT to_regclass(:t)"), {"t": migrations.VERSION_TABLE}):
                versions = connection.scalars(
                    text(f"SELECT version_num FROM {migrations.VERSION_TABLE}")
                )
                heads = tuple(sorted(versions))
            return heads, _ours(connection), ""
    except DBAPIError as error:
        return None, None, _cause(error)


def _ours(connection: Connection | None) -> catalog.Catalog:
    assert connection is not None
    snapshot = catalog.snapshot(connection)
    return {name: table for name, table in snapshot.items() if name in OUR_TABLES}


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
    if not changes and step is not None and _commits_as_it_goes(step):
        changes.append(
            f"what revision {step.revision.revision} committed as it went (e.g. batches of "
            "updated rows; re-running it is safe)"
        )
    return "left behind: " + (", ".join(changes) if changes else "nothing")


def _validity(definition: str) -> str:
    if "(INVALID" in definition:
        return " (INVALID)"
    return " (NOT VALID)" if definition.endswith("NOT VALID") else ""


def _commits_as_it_goes(step: Any) -> bool:
    function = step.revision.module.upgrade if step.is_upgrade else step.revision.module.downgrade
    return "autocommit_block" in inspect.getsource(function)


def _cause(error: BaseException) -> str:
    if isinstance(error, DBAPIError) and error.orig is not None:
        text = str(error.orig)
    elif isinstance(error, CommandError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split()).rstrip(".")
