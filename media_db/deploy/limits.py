"""`make limits` (`python -m media_db.deploy.limits`): the limits per key (processing_limits)
and where each key stands now: running jobs against `max_running`, starts in its window against
`per_second`, due jobs waiting, paused or not. `make status` lists the paused keys and the keys
at their limit from the same query.

    make limits          # one line per key
    make limits JSON=1   # the same as JSON

Limits are set from code (JobQueue.set_limit, clear_limit, pause, resume; docs/queue.md).
Exit status: 0, or 3 when the database cannot be reached.
"""

import sys
from dataclasses import asdict, dataclass
from decimal import Decimal

from sqlalchemy import Connection, text

from media_db.deploy.reading import read_and_print

# Counted as the claim counts (processing_limits_room, models/triggers.py): running jobs of
# the key, its starts within its window (1 s; 1/per_second s below 1), and its due jobs.
# to_regclass: nothing before revision 0013.
LIMITS_NOW = text("""
    SELECT l.key, l.max_running, l.per_second, l.paused, l.updated_at,
        (SELECT count(*) FROM processing_jobs j
         WHERE j.status = 'running' AND COALESCE(j.limit_key, j.workflow_type) = l.key)
            AS running,
        (SELECT count(*) FROM processing_jobs j
         WHERE COALESCE(j.limit_key, j.workflow_type) = l.key
           AND j.started_at > clock_timestamp()
               - interval '1 second' / least(coalesce(l.per_second, 1), 1))
            AS started_in_window,
        (SELECT count(*) FROM processing_jobs j
         WHERE j.status = 'queued' AND j.run_at <= now()
           AND COALESCE(j.limit_key, j.workflow_type) = l.key)
            AS due
    FROM processing_limits l
    ORDER BY l.key
""")
HAS_LIMITS = text("SELECT to_regclass('processing_limits') IS NOT NULL")


@dataclass
class KeyState:
    key: str
    max_running: int | None
    per_second: float | None
    paused: bool
    updated_at: str | None
    running: int
    started_in_window: int
    due: int

    @property
    def at_limit(self) -> bool:
        """No claim can start another job of this key now (its running jobs or its starts)."""
        full = self.max_running is not None and self.running >= self.max_running
        starts = None if self.per_second is None else max(int(self.per_second), 1)
        return full or (starts is not None and self.started_in_window >= starts)

    def describe(self) -> str:
        limits = []
        if self.max_running is not None:
            limits.append(f"{self.running:,} of max_running {self.max_running:,} running")
        else:
            limits.append(f"{self.running:,} running")
        if self.per_second is not None:
            window = "1 s" if self.per_second >= 1 else f"{1 / self.per_second:g} s"
            limits.append(
                f"{self.started_in_window:,} started in the last {window} "
                f"(per_second {self.per_second:g})"
            )
        state = "PAUSED" if self.paused else "AT ITS LIMIT" if self.at_limit else "claiming"
        return f"{self.key}: {state}; {'; '.join(limits)}; {self.due:,} due"


def key_states(connection: Connection) -> list[KeyState] | None:
    """Every row of processing_limits and its key's counts; None before revision 0013."""
    if not connection.scalar(HAS_LIMITS):
        return None
    states = []
    for row in connection.execute(LIMITS_NOW):
        per_second = row.per_second
        states.append(
            KeyState(
                key=row.key,
                max_running=row.max_running,
                per_second=float(per_second) if isinstance(per_second, Decimal) else per_second,
                paused=row.paused,
                updated_at=None if row.updated_at is None else row.updated_at.isoformat(),
                running=int(row.running),
                started_in_window=int(row.started_in_window),
                due=int(row.due),
            )
        )
    return states


def render(states: list[KeyState] | None) -> str:
    if states is None:
        return "No processing_limits table: the database is before revision 0013 (make upgrade)."
    if not states:
        return "No limits: every key is claimed without limits, none is paused."
    return "\n".join(state.describe() for state in states)


def main(argv: list[str]) -> int:
    return read_and_print(
        argv,
        "make limits",
        __doc__.split("\n")[0],
        "limits",
        key_states,
        render,
        lambda states: (
            None if states is None else [asdict(s) | {"at_limit": s.at_limit} for s in states]
        ),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
