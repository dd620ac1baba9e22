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

A failover (the primary stopped, a standby promoted) ends the wait: the session reading the
standbys goes with the old primary, and so does the migration's own, which no waiting brings
back. The throttle then looks for the server taking writes now, through the same URL (a
multi-host one finds the new primary), for at most FAILOVER_SECONDS, and stops the command in
one line saying what it found: the standby it waited for promoted (the timeline moved on), the
primary restarted, or no primary yet.
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
from sqlalchemy.exc import DBAPIError

from media_db.deploy.project import OUR_TABLES

log = logging.getLogger(__name__)

BATCH = re.compile(
    r"^\s*UPDATE\s+\"?(?P<table>\w+)\"?\s.*\bLIMIT\s+(?P<rows>\d+)\s*\)", re.IGNORECASE | re.DOTALL
)
LIMIT = re.compile(r"\bLIMIT\s+\d+(\s*\))", re.IGNORECASE)
POLL_SECONDS = 0.5
# How long a lost primary is looked for, to say what became of it: pg_auto_failover promotes in
# seconds (perform failover) to about 30 s (a primary gone silent); Patroni's TTL is 30 s.
FAILOVER_SECONDS = 60.0

STANDBYS = text("""
    SELECT pid, coalesce(application_name, '') AS name, client_addr, state,
           coalesce(EXTRACT(epoch FROM replay_lag), 0)::float8 AS replay_lag,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS bytes_behind,
           replay_lsn::text AS replay_lsn
    FROM pg_stat_replication ORDER BY pid
""")
# Which server this is: a promotion starts a new timeline (the WAL file name's first 8 hex
# digits), a restart a new postmaster.
PRIMARY = text("""
    SELECT ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::int AS timeline,
           pg_postmaster_start_time() AS started,
           coalesce(host(inet_server_addr()), '') AS host,
           coalesce(inet_server_port()::text, 'its socket') AS port
""")


@dataclass(frozen=True)
class Primary:
    timeline: int
    started: Any
    host: str
    port: str


@dataclass
class Standby:
    name: str
    host: str
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
        self.primary: Primary | None = None  # the server the side session first reached

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
            self._wait_for_standbys()

    def _side(self) -> Connection:
        """The side session, opened (again) if need be."""
        if self.side is None:
            self.side = self.connection.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
            if self.primary is None:
                self.primary = Primary(**self.side.execute(PRIMARY).one()._mapping)
        return self.side

    def _wait_for_standbys(self) -> None:
        started = time.monotonic()
        waited_for: str | None = None
        while behind := self._behind_or_lost(waited_for):
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

    def _behind_or_lost(self, waited_for: str | None) -> Standby | None:
        try:
            return self._behind(self._side())
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            self.side = None
            self._stop_unless_same_primary(waited_for, error)
            return self._behind(self._side())  # only the side session was lost: go on

    def _stop_unless_same_primary(self, waited_for: str | None, error: DBAPIError) -> None:
        """The side session was lost: if its server went with it (a failover, a restart), the
        migration's session went too; stop, saying what became of the primary."""
        what = f"Backfill stopped waiting for standby {waited_for}" if waited_for else "Backfill"
        cause = " ".join(str(error.orig or error).split())
        deadline = time.monotonic() + FAILOVER_SECONDS
        while True:
            try:
                with self.connection.engine.connect() as probe:
                    now = Primary(**probe.execute(PRIMARY).one()._mapping)
                break
            except DBAPIError:
                if time.monotonic() >= deadline:
                    raise CommandError(
                        f"{what}: the primary went away ({cause}) and no server took writes "
                        f"within {FAILOVER_SECONDS:g} s. Run the command again once one does: "
                        "it goes on from the batches that server holds."
                    ) from None
                time.sleep(POLL_SECONDS)
        was, at = self.primary, f"{now.host or 'the server'}:{now.port}"
        assert was is not None
        if now.timeline != was.timeline:
            # Named when it is the only standby whose address the new primary's can be.
            promoted = [
                standby.name
                for standby in self.standbys.values()
                if not now.host or standby.host in (now.host, "")
            ]
            who = f"standby {promoted[0]}" if len(promoted) == 1 else "a standby"
            happened = (
                f"{who} is the primary now (promoted: timeline {was.timeline} -> "
                f"{now.timeline}, at {at}), and this migration's session went with the old one"
            )
        elif now.started != was.started:
            happened = f"the primary restarted ({cause}), and this migration's session went with it"
        else:
            return
        raise CommandError(
            f"{what}: {happened}. Run the command again: it goes on from the batches the primary "
            "holds now."
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
            host = str(row.client_addr or "")  # a Unix socket's standby has none
            standby = self.standbys.get(row.pid) or Standby(row.name, host, row.replay_lsn, now)
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
