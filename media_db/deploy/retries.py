"""Lock timeouts and deadlocks: the migrations run again with backoff, then fail naming the
sessions that hold our tables."""

import logging
import time
from collections.abc import Callable

from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from media_db.deploy import sessions

log = logging.getLogger(__name__)

LOCK_NOT_AVAILABLE, DEADLOCK = "55P03", "40P01"


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
                # What the failure left behind and what to run next: media_db/deploy/failures.py.
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
    rows = sessions.holding_our_tables(connection)
    connection.rollback()
    if not rows:
        return "no session holds our tables now"
    return "; ".join(sessions.one_line(row) for row in rows)
