"""Progress of long migration work, reported while it runs (used by alembic/env.py, online).

A thread with its own connection wakes every few seconds (`-x progress-interval=5s`) and reports:

- index builds on our tables, from pg_stat_progress_create_index: phase, blocks and tuples done
  of total. Polling the server covers every build, whether a revision calls
  `op.create_index(..., postgresql_concurrently=True)` or writes the SQL itself (0007);
- batched backfills: rows done (counted from the UPDATE/DELETE/INSERT statements the migration
  connection runs on the table), rows left and an ETA. What "left" means is declared by the
  revision, `backfills = {"table": "SQL condition of a row still to do"}`, counted once at its
  first batch (media_db/deploy/landed.py for those that landed before the declaration).

On a terminal the report is one live line; otherwise one log line per interval.
"""

import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from alembic.runtime.migration import MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text

from media_db.deploy import landed, squashed
from media_db.deploy.project import OUR_TABLES

log = logging.getLogger(__name__)

WRITE = re.compile(r"^\s*(?:UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+\"?(\w+)", re.IGNORECASE)

INDEX_BUILDS = text("""
    SELECT p.command, p.phase, c.relname AS tbl, i.relname AS idx, p.blocks_done,
           p.blocks_total, p.tuples_done, p.tuples_total, p.lockers_done, p.lockers_total
    FROM pg_stat_progress_create_index p
    JOIN pg_class c ON c.oid = p.relid
    LEFT JOIN pg_class i ON i.oid = p.index_relid
    WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND c.relname = ANY(:tables) AND c.relnamespace = CAST(current_schema() AS regnamespace)
""")


@dataclass
class Backfill:
    table: str
    total: int
    done_at_start: int
    started: float


def _count(done: int, total: int, unit: str) -> str:
    share = f" ({done / total:.0%})" if total else ""
    return f"{unit} {done:,} of {total:,}{share}"


def describe_index_build(row: Any) -> str:
    name = f"{row.idx} " if row.idx else ""
    parts = [f"{row.command} {name}on {row.tbl}: {row.phase}"]
    if row.lockers_total:
        parts.append(_count(row.lockers_done, row.lockers_total, "sessions waited for"))
    if row.blocks_total:
        parts.append(_count(row.blocks_done, row.blocks_total, "blocks"))
    if row.tuples_total:
        parts.append(_count(row.tuples_done, row.tuples_total, "tuples"))
    return ", ".join(parts)


def describe_backfill(backfill: Backfill, done_now: int, now: float) -> str:
    done = done_now - backfill.done_at_start
    left = max(backfill.total - done, 0)
    rate = done / (now - backfill.started) if now > backfill.started else 0
    eta = f"ETA {_duration(left / rate)}" if rate and left else "ETA unknown"
    return f"backfill {backfill.table}: {done:,} rows done, {left:,} left, {eta}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def declared_backfills(script: ScriptDirectory, info: MigrationInfo | None) -> dict[str, str]:
    if info is None or not info.is_upgrade or info.is_stamp or not info.up_revision_id:
        return {}
    return backfills_of(script, info.up_revision_id)


def backfills_of(script: ScriptDirectory, rev: str) -> dict[str, str]:
    """{table: SQL condition of a row the revision's upgrade still has to backfill}."""
    found = script.get_revision(rev)
    if found is not None and squashed.replaces(found):
        return {}  # a baseline only creates: landed.py speaks of the revision it replaced
    module = found.module if found is not None else None
    return dict(getattr(module, "backfills", None) or landed.BACKFILLS.get(rev, {}))


class Reporter:
    def __init__(
        self,
        connection: Connection,
        script: ScriptDirectory,
        current_step: Callable[[], MigrationInfo | None],
        interval: float,
        out: TextIO = sys.stderr,
    ) -> None:
        self.connection, self.script, self.current_step = connection, script, current_step
        self.interval, self.out = interval, out
        self.live = out.isatty()
        self.written: Counter[str] = Counter()  # rows written per table by the migration
        self.stop = threading.Event()
        self.backfills: dict[str, Backfill] = {}
        self.declared: dict[str, str] = {}  # the running step's backfills: table -> condition
        self.written_before: dict[str, int] = {}  # rows written per table before the step
        self.step_began = 0.0
        self.step: MigrationInfo | None = None
        self.shown = False

    def _count_writes(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if (match := WRITE.match(statement)) and cursor.rowcount > 0:
            self.written[match[1]] += cursor.rowcount

    @contextmanager
    def running(self) -> Iterator[None]:
        if self.interval <= 0:
            yield
            return
        event.listen(self.connection, "after_cursor_execute", self._count_writes)
        thread = threading.Thread(target=self._run, name="migration-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.stop.set()
            thread.join()
            event.remove(self.connection, "after_cursor_execute", self._count_writes)
            if self.live and self.shown:
                self.out.write("\n")

    def _run(self) -> None:
        try:
            with self.connection.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as side:
                while not self.stop.wait(self.interval):
                    self.report(self.poll(side))
        except Exception as error:  # progress is a courtesy: never fail the migration for it
            log.warning("Progress reporting stopped: %s", " ".join(str(error).split()))

    def poll(self, side: Connection) -> list[str]:
        step = self.current_step()
        if step is not self.step:
            self.step, self.backfills, self.step_began = step, {}, time.monotonic()
            self.declared = declared_backfills(self.script, step)
            self.written_before = {table: self.written[table] for table in self.declared}
        for table, condition in self.declared.items():
            done = self.written[table] - self.written_before[table]
            # Counted at the first batch: an expand's condition names a column it adds first.
            if table not in self.backfills and done:
                left = side.scalar(text(f'SELECT count(*) FROM "{table}" WHERE {condition}'))
                self.backfills[table] = Backfill(
                    table, int(left or 0) + done, self.written_before[table], self.step_began
                )
        lines = [
            describe_index_build(row)
            for row in side.execute(INDEX_BUILDS, {"tables": list(OUR_TABLES)})
        ]
        now = time.monotonic()
        lines += [
            describe_backfill(backfill, self.written[table], now)
            for table, backfill in self.backfills.items()
            if self.written[table] > backfill.done_at_start
        ]
        return lines

    def report(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.live:
            self.out.write("\r\x1b[K" + "; ".join(lines)[:200])
            self.out.flush()
            self.shown = True
        else:
            for line in lines:
                log.info("Progress: %s", line)
