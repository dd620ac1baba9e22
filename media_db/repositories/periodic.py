"""Periodic jobs: declared in code, enqueued once per period of their cron schedule, whatever
the number of workers that declare them (run_worker(..., periodic=[...])).

    Periodic("prune", "0 3 * * *", "prune")  # a `prune` job every day at 03:00 UTC

`enqueue_period` is the whole scheduler, one statement: it moves the periodic job's row of
`processing_schedules` forward to the period holding `now` (only if the row holds an older
one) and, in the same statement, inserts the period's job. Of several workers at the same
period, the first to move the row writes the job; the others wait on its row lock, find the
row moved and write nothing. The row outlives the job (finished, pruned), so a period is never
enqueued twice. A row is never moved backwards (a worker whose clock is behind writes nothing),
and moves to the current period only: after a downtime the missed periods are not replayed,
the current one is enqueued once. A periodic job seen for the first time gets its row for the
current period and no job: its first run is at its next fire time, as in cron.
"""

import functools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, exists, func, select
from sqlalchemy.dialects.postgresql import insert

from media_db import validation
from media_db.cron import Schedule
from media_db.models import ProcessingSchedule
from media_db.pool import Database
from media_db.records import JobRecord, NewJob
from media_db.repositories.common import fetch_one
from media_db.repositories.jobs import _DEDUPED, _ENQUEUED, COLUMNS, ENQUEUE_COLUMNS, JOBS, NEW_JOB
from media_db.statements import compiled, max_length, table_of

SCHEDULES = table_of(ProcessingSchedule)
NAME_LENGTH = max_length(SCHEDULES.c.name)
# The job's dedupe_key names its period: `cron:<name>:<period start, UTC>`.
KEY_FORMAT = "cron:{name}:{period:%Y-%m-%dT%H:%MZ}"
_NAME = bindparam("name", type_=SCHEDULES.c.name.type)
_upsert = insert(SCHEDULES).values(
    name=_NAME, period=bindparam("period", type_=SCHEDULES.c.period.type)
)
_moved = (
    _upsert.on_conflict_do_update(
        index_elements=[SCHEDULES.c.name],
        set_={"period": _upsert.excluded.period, "updated_at": func.now()},
        # Re-read under the row's lock: a worker that waited on another's move finds it moved.
        where=SCHEDULES.c.period < _upsert.excluded.period,
    )
    .returning(SCHEDULES.c.name)
    .cte("moved")
)
# Read in the statement's snapshot, before the move: a row seen for the first time gets no job.
_SEEN_BEFORE = exists().where(SCHEDULES.c.name == _NAME)
ENQUEUE_PERIOD = compiled(
    insert(JOBS)
    .from_select(
        list(ENQUEUE_COLUMNS),
        select(*_ENQUEUED.values()).select_from(_moved).where(_SEEN_BEFORE),
    )
    .on_conflict_do_nothing(**_DEDUPED)
    .returning(*COLUMNS)
    .add_cte(_moved)
)


@dataclass(frozen=True)
class Periodic:
    """A job enqueued once per period of `schedule` (5-field cron, UTC: media_db/cron.py),
    named `name` (unique among periodic jobs: its period is stored under it), of
    `workflow_type`, with the job's other settings (None: the column's default). Bad input is
    refused here, in one line (InvalidInput), before any worker starts."""

    name: str
    schedule: str
    workflow_type: str
    priority: int | None = None
    limit_key: str | None = None
    max_attempts: int | None = None
    max_snoozes: int | None = None

    def __post_init__(self) -> None:
        validation.required_text("name", self.name, NAME_LENGTH)
        self.parsed  # noqa: B018 - parsed once, here: a bad schedule is refused at once
        NEW_JOB.row(self.job(datetime.now().astimezone()))

    @functools.cached_property
    def parsed(self) -> Schedule:
        return Schedule.parse(self.schedule)

    def job(self, period: datetime) -> NewJob:
        """The job of the period starting at `period`."""
        return NewJob(
            self.workflow_type,
            priority=self.priority,
            max_attempts=self.max_attempts,
            max_snoozes=self.max_snoozes,
            limit_key=self.limit_key,
            dedupe_key=KEY_FORMAT.format(name=self.name, period=period),
        )


async def enqueue_period(db: Database, periodic: Periodic, now: datetime) -> JobRecord | None:
    """The job of the period holding `now`, if this call is the one that enqueues it; None
    when that period was already enqueued (by any worker), or when the periodic job is seen
    for the first time (its row is written, its first job comes at its next period)."""
    period = periodic.parsed.latest(now)
    values = dict(zip(ENQUEUE_COLUMNS, NEW_JOB.row(periodic.job(period)), strict=True))
    params = {**values, "name": periodic.name, "period": period}
    return await fetch_one(db, ENQUEUE_PERIOD, params, JobRecord.from_row)
