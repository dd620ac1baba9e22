"""`make schedules` (`python -m media_db.deploy.schedules`): each periodic job's last period
enqueued (processing_schedules) and what became of that period's job: queued, running,
completed, failed or cancelled, or none (pruned since; or a periodic job seen for the first
time, whose first job comes at its next fire time).

    make schedules          # one line per periodic job
    make schedules JSON=1   # the same as JSON

The schedules themselves are declared in code (Periodic, run_worker(periodic=[...]);
docs/queue.md): the table holds what the workers enqueued. Finding the periods' jobs reads
processing_jobs once (their dedupe keys; a live job's through its index).
Exit status: 0, or 3 when the database cannot be reached.
"""

import sys
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, select, text

from media_db.deploy.reading import read_and_print
from media_db.repositories.jobs import JOBS
from media_db.repositories.periodic import KEY_FORMAT, SCHEDULES

HAS_SCHEDULES = text("SELECT to_regclass('processing_schedules') IS NOT NULL")


@dataclass
class PeriodState:
    name: str
    period: str  # the start of the last period enqueued, UTC
    dedupe_key: str  # its job's
    job_id: str | None  # None: no job of that period (pruned, or the periodic job is new)
    job_status: str | None
    attempts: int | None

    def describe(self) -> str:
        if self.job_id is None:
            job = "no job (pruned since, or the first period seen: none is enqueued for it)"
        else:
            job = f"job {self.job_id} {self.job_status} after {self.attempts} attempt(s)"
        return f"{self.name}: last period {self.period}; {job}"


def period_states(connection: Connection) -> list[PeriodState] | None:
    """Every row of processing_schedules and its period's job; None before revision 0014."""
    if not connection.scalar(HAS_SCHEDULES):
        return None
    rows = connection.execute(select(SCHEDULES).order_by(SCHEDULES.c.name)).all()
    keys = {row.name: KEY_FORMAT.format(name=row.name, period=row.period) for row in rows}
    # The period's latest job, should a retry have enqueued it again after a failure.
    jobs = {
        job.dedupe_key: job
        for job in connection.execute(
            select(JOBS.c.dedupe_key, JOBS.c.id, JOBS.c.status, JOBS.c.attempts)
            .where(JOBS.c.dedupe_key.in_(list(keys.values())))
            .order_by(JOBS.c.dedupe_key, JOBS.c.created_at.desc())
            .distinct(JOBS.c.dedupe_key)
        )
    }
    states = []
    for row in rows:
        job = jobs.get(keys[row.name])
        states.append(
            PeriodState(
                name=row.name,
                period=f"{row.period:%Y-%m-%dT%H:%MZ}",
                dedupe_key=keys[row.name],
                job_id=None if job is None else str(job.id),
                job_status=None if job is None else str(job.status),
                attempts=None if job is None else job.attempts,
            )
        )
    return states


def render(states: list[PeriodState] | None) -> str:
    if states is None:
        return "No processing_schedules table: the database is before revision 0014 (make upgrade)."
    if not states:
        return "No periodic job has run yet: none was given to run_worker(periodic=[...])."
    return "\n".join(state.describe() for state in states)


def main(argv: list[str]) -> int:
    return read_and_print(
        argv,
        "make schedules",
        __doc__.split("\n")[0],
        "schedules",
        period_states,
        render,
        lambda states: None if states is None else [asdict(state) for state in states],
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
