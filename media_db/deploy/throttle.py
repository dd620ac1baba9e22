"""Batched backfills at the deploy's pace, never outrunning a streaming standby.

A batched backfill is what 0003 and 0008 run (and what `make revision` writes): in an autocommit
block, `UPDATE <our table> ... WHERE id IN (SELECT id ... LIMIT <n>)` again and again, each batch
committed on its own. Landed revisions are never edited, so the pace is set here, on the
migration connection, for every revision alike:

- `-x backfill-batch=N` puts N in place of the revision's LIMIT (0 keeps the revision's own);
- `-x backfill-pause=<duration>` sleeps after each batch, holding no lock;
- `-x max-replica-lag=<duration>` (0: off) waits after a batch while a standby in
  pg_stat_replication is further behind; `-x replica-lag-wait` bounds that wait.

A batch's row locks go with its commit, so nothing is held longer than one batch, waits
included. How far behind a standby is: its `replay_lag`, or, while its replay stands still with
WAL still to apply (a paused replay, a long query on the standby), how long it has stood still
as seen by this migration (`replay_lag` only moves when replay does). So a backfill adds at most
about max-replica-lag of its own writes to a standby that had already stopped, then waits.
"""

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic.util import CommandError
from sqlalchemy import Connection, event, text

from media_db.deploy.project import OUR_TABLES

log = logging.getLogger(__name__)

BATCH = re.compile(
    r"^\s*UPDATE\s+\"?(?P<table>\w+)\"?\s.*\bLIMIT\s+(?P<rows>\d+)\s*\)", re.IGNORECASE | re.DOTALL
)
LIMIT = re.compile(r"\bLIMIT\s+\d+(\s*\))", re.IGNORECASE)
POLL_SECONDS = 0.5

STANDBYS = text("""
    SELECT pid, coalesce(application_name, '') AS name, client_addr, state,
           coalesce(EXTRACT(epoch FROM replay_lag), 0)::float8 AS replay_lag,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS bytes_behind,
           replay_lsn::text AS replay_lsn
    FROM pg_stat_replication ORDER BY pid
""")


@dataclass
class Standby:
    name: str
    replay_lsn: str | None
    stalled_since: float
    lag: float = 0.0
    bytes_behind: float = 0.0

    def describe(self, now: float) -> str:
        stalled = now - self.stalled_since
        why = f"replay stalled {stalled:.0f} s" if self.bytes_behind and stalled >= 1 else "replay"
        behind = f"{self.lag:.1f} s behind ({why}, {self.bytes_behind:,.0f} bytes)"
        return f"standby {self.name or '(unnamed)'}: {behind}"


class Throttle:
    def __init__(
        self,
        connection: Connection,
        batch: int,
        pause: float,
        max_lag: float,
        lag_wait: float,
    ) -> None:
        self.connection = connection
        self.batch, self.pause, self.max_lag, self.lag_wait = batch, pause, max_lag, lag_wait
        self.standbys: dict[int, Standby] = {}
        self.unreadable_said = False
        self.side: Connection | None = None  # reads pg_stat_replication, outside any batch

    @contextmanager
    def applied(self) -> Iterator[None]:
        if not (self.batch or self.pause or self.max_lag):
            yield
            return
        event.listen(self.connection, "before_cursor_execute", self._before, retval=True)
        event.listen(self.connection, "after_cursor_execute", self._after)
        try:
            yield
        finally:
            event.remove(self.connection, "after_cursor_execute", self._after)
            event.remove(self.connection, "before_cursor_execute", self._before)
            if self.side is not None:
                self.side.close()

    def _is_batch(self, conn: Connection, statement: str) -> bool:
        match = BATCH.match(statement)
        # Only committed batches: inside a transaction a pause would hold the row locks.
        return bool(match and match["table"] in OUR_TABLES and _autocommit(conn))

    def _before(
        self, conn: Connection, cursor: Any, statement: str, parameters: Any, *_: Any
    ) -> tuple[str, Any]:
        if self.batch and self._is_batch(conn, statement):
            statement = LIMIT.sub(rf"LIMIT {self.batch}\1", statement, count=1)
        return statement, parameters

    def _after(self, conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if not self._is_batch(conn, statement) or cursor.rowcount <= 0:
            return
        if self.pause:
            time.sleep(self.pause)
        if self.max_lag:
            if self.side is None:
                self.side = self.connection.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            self._wait_for_standbys(self.side)

    def _wait_for_standbys(self, conn: Connection) -> None:
        started = time.monotonic()
        waited_for: str | None = None
        while behind := self._behind(conn):
            now = time.monotonic()
            if waited_for is None:
                log.info(
                    "Backfill waits: %s, more than max-replica-lag=%g s",
                    behind.describe(now),
                    self.max_lag,
                )
                waited_for = behind.name
            if now - started >= self.lag_wait:
                raise CommandError(
                    f"{behind.describe(now)}: it stayed more than {self.max_lag:g} s behind for "
                    f"{self.lag_wait:g} s. The backfill stopped between batches (every batch "
                    "done is committed; running the command again goes on from there). Let the "
                    "standby catch up, or raise -x replica-lag-wait / MIGRATION_REPLICA_LAG_WAIT"
                    " or -x max-replica-lag / MIGRATION_MAX_REPLICA_LAG (0 turns it off)."
                )
            time.sleep(POLL_SECONDS)
        if waited_for is not None:
            log.info(
                "Backfill resumes: standby %s caught up after %.0f s",
                waited_for,
                time.monotonic() - started,
            )

    def _behind(self, conn: Connection) -> Standby | None:
        """The standby furthest behind, if more than max_lag."""
        now = time.monotonic()
        rows = conn.execute(STANDBYS).all()
        seen: dict[int, Standby] = {}
        for row in rows:
            if row.replay_lsn is None and row.bytes_behind is None:
                self._say_unreadable(row.name)
                continue
            standby = self.standbys.get(row.pid) or Standby(row.name, row.replay_lsn, now)
            if row.replay_lsn != standby.replay_lsn or not row.bytes_behind:
                standby.replay_lsn, standby.stalled_since = row.replay_lsn, now
            standby.bytes_behind = row.bytes_behind or 0.0
            stalled = now - standby.stalled_since if standby.bytes_behind else 0.0
            standby.lag = max(row.replay_lag, stalled)
            seen[row.pid] = standby
        self.standbys = seen
        worst = max(seen.values(), key=lambda standby: standby.lag, default=None)
        return worst if worst is not None and worst.lag > self.max_lag else None

    def _say_unreadable(self, name: str) -> None:
        if not self.unreadable_said:
            log.warning(
                "Cannot read how far standby %s is behind (pg_stat_replication shows its "
                "positions to superusers and pg_monitor only): backfills do not wait for it. "
                "GRANT pg_monitor TO the migration role to have them wait.",
                name or "(unnamed)",
            )
            self.unreadable_said = True


def _autocommit(conn: Connection) -> bool:
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))
