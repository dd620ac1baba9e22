"""Riding out the database's outages: an operation that fails with DatabaseUnavailable is tried
again until it succeeds, so a worker outlives a restart or a network cut of minutes.

While the server still accepts connections (a terminated session, a connection lost
mid-statement, a busy pool) the operation is tried again after a short backoff. When it does
not, the outage is waited out by probing the server directly, one connection per try, at a
jittered exponential backoff capped at MAX_BACKOFF_SECONDS. The pool is not asked until the
server answers: psycopg_pool only reconnects when asked (reconnect_timeout=0, media_db/pool.py)
and logs two warnings per failed attempt, so it stays quiet after the outage's first request.
Once the server is back, its idle connections (to the server that went away) are replaced.

The log gets one warning when the outage starts, at most one per LOG_EVERY_SECONDS while it
lasts, and one info line when the database is back; every line is one line and holds no secret
(DatabaseUnavailable's messages name the URL with its password masked).

A statement refused for want of a privilege (PermissionDenied, SQLSTATE 42501) is waited out
the same way, with the same backoff, until someone grants it: one ERROR line saying what was
refused and the GRANT that fixes it (`explain`), at most one per LOG_EVERY_SECONDS while it
lasts, and one info line once granted.
"""

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from media_db.errors import DatabaseUnavailable, PermissionDenied
from media_db.pool import Database

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0
LOG_EVERY_SECONDS = 30.0


Explain = Callable[[PermissionDenied], Awaitable[str]]


async def ride_out(
    db: Database,
    operation: Callable[[], Awaitable[T]],
    max_outage: float | None = None,
    explain: Explain | None = None,
) -> T:
    """`operation()`, tried again while it fails with DatabaseUnavailable or PermissionDenied:
    for ever, or until the database has been unavailable (or refusing) for `max_outage`
    seconds, then DatabaseUnavailable saying so. `explain`: the line to log for a refusal
    (default: its message)."""
    outage: _Outage | None = None
    while True:
        try:
            result = await operation()
        except DatabaseUnavailable as error:
            outage = outage or _Outage(db, max_outage)
            await outage.wait(one_line(error))
        except PermissionDenied as error:
            outage = outage or _Outage(db, max_outage)
            await outage.denied(await explain(error) if explain else one_line(error))
        else:
            if outage is not None:
                outage.over()
            return result


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def duration(seconds: float) -> str:
    """42 s, 1m30s, 2h05m."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


@dataclass
class _Outage:
    """One run of failures of one operation, from its first failure to its next success."""

    db: Database
    max_outage: float | None
    started: float = field(default_factory=time.monotonic)
    delay: float = FIRST_BACKOFF_SECONDS
    down: bool = False  # the last probe was refused
    announced: bool = False  # "unreachable" was logged: "back" will be
    refused: bool = False  # a privilege was missing: "granted" will be logged
    logged_at: float = -math.inf

    async def wait(self, reason: str) -> None:
        """Returns when the operation is worth another try: after a pause while the server
        accepts connections, at once when it accepts them again after refusing."""
        while True:
            try:
                await self.db.check_server()
            except DatabaseUnavailable as refused:
                reason = one_line(refused)
                self._report_down(reason)
            else:
                if self.down:
                    self.down, self.delay = False, FIRST_BACKOFF_SECONDS
                    await self.db.replace_idle()
                    return
                if self._may_log():
                    log.warning("database error, retrying in %s: %s", duration(self.delay), reason)
                await self._pause(reason)
                return
            await self._pause(reason)

    async def denied(self, line: str) -> None:
        """Pauses before the next try; the line says what was refused and how to grant it."""
        self.refused = True
        if self._may_log():
            log.error(
                "%s; retrying with backoff up to %s until granted",
                line,
                duration(MAX_BACKOFF_SECONDS),
            )
        await self._pause(line)

    def over(self) -> None:
        if self.refused:
            log.info("privilege granted after %s; carrying on", duration(self._elapsed()))
        elif self.announced:
            log.info("database back after %s", duration(self._elapsed()))

    def _report_down(self, reason: str) -> None:
        self.down = True
        if not self.announced:
            self.announced = True
            self.logged_at = time.monotonic()
            log.warning(
                "database unreachable, retrying with backoff up to %s: %s",
                duration(MAX_BACKOFF_SECONDS),
                reason,
            )
        elif self._may_log():
            log.warning(
                "database unreachable for %s, retrying every %s: %s",
                duration(self._elapsed()),
                duration(self.delay),
                reason,
            )

    def _may_log(self) -> bool:
        """At most one line per LOG_EVERY_SECONDS (the outage's first is always written)."""
        now = time.monotonic()
        if now - self.logged_at < LOG_EVERY_SECONDS:
            return False
        self.logged_at = now
        return True

    async def _pause(self, reason: str) -> None:
        """Sleeps the backoff (jittered 50-150 %, so workers do not all come back at the same
        instant), or raises once `max_outage` has passed."""
        jitter = random.uniform(0.5, 1.5)  # noqa: S311 - not a secret
        pause = min(self.delay * jitter, MAX_BACKOFF_SECONDS)
        self.delay = min(self.delay * 2, MAX_BACKOFF_SECONDS)
        if self.max_outage is not None:
            left = self.max_outage - self._elapsed()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"gave up: the database was unavailable for {duration(self._elapsed())}, "
                    f"max_outage is {duration(self.max_outage)}: {reason}"
                )
            pause = min(pause, left)
        await asyncio.sleep(pause)

    def _elapsed(self) -> float:
        return time.monotonic() - self.started
