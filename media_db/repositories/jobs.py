"""The processing job queue.

`claim` is one statement: the inner SELECT picks the best queued job and locks it with
FOR UPDATE SKIP LOCKED, so concurrent workers each get a different job without waiting on each
other; the UPDATE moves it to `running`. `claim_many` is the same statement for up to n jobs
(`id = ANY(ARRAY(SELECT ... LIMIT n FOR UPDATE SKIP LOCKED))`). A job is never claimed twice,
and none is lost.

Which jobs and in which order come from the model's claim index, `idx_processing_jobs_claim`
(its WHERE and its columns), so the claim cannot drift from the index that serves it: highest
priority first, then oldest. `claim_many` returns its batch in that order, sorted by the same
statement. (priority is NOT NULL since 0008, so no writer can store a NULL one.)
"""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DefaultClause,
    Integer,
    Interval,
    Select,
    String,
    Text,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.sql.util import ClauseAdapter

from media_db import validation
from media_db.errors import InvalidInput, InvalidTransition, NotFound
from media_db.pool import Database
from media_db.records import JobRecord
from media_db.repositories.common import fetch_all, fetch_one, media_item_must_exist
from media_db.statements import (
    bounds,
    compiled,
    constant,
    index,
    max_length,
    record_columns,
    table_of,
)
from models import JobStatus, ProcessingJob

JOBS = table_of(ProcessingJob)
COLUMNS = record_columns(JOBS, JobRecord)
CLAIM_INDEX = index(JOBS, "idx_processing_jobs_claim")
CLAIMABLE: ColumnElement[bool] = CLAIM_INDEX.dialect_options["postgresql"]["where"]
CLAIM_ORDER = list(CLAIM_INDEX.expressions)
WORKFLOW_TYPE_LENGTH = max_length(JOBS.c.workflow_type)
PRIORITY = bounds(JOBS.c.priority)
MAX_BATCH = 1000
BATCH = validation.between(1, MAX_BATCH)


def _server_default(column: Any) -> int:
    default = column.server_default
    assert isinstance(default, DefaultClause)
    return int(str(getattr(default.arg, "text", default.arg)))


DEFAULT_PRIORITY = _server_default(JOBS.c.priority)


def _next_queued(limit: ColumnElement[Any], by_workflow: bool) -> Select[Any]:
    chosen = select(JOBS.c.id).where(CLAIMABLE)
    if by_workflow:
        chosen = chosen.where(JOBS.c.workflow_type == bindparam("workflow_type"))
    # correlate(None): the subquery reads processing_jobs itself, not the UPDATE's row.
    return (
        chosen.order_by(*CLAIM_ORDER).limit(limit).with_for_update(skip_locked=True).correlate(None)
    )


def _claim(many: bool, by_workflow: bool) -> str:
    if many:
        chosen = _next_queued(bindparam("n", type_=Integer), by_workflow).scalar_subquery()
        which = JOBS.c.id == any_(func.array(chosen))
    else:
        which = JOBS.c.id == _next_queued(literal_column("1"), by_workflow).scalar_subquery()
    claim = (
        update(JOBS)
        .values(status=constant(JobStatus.RUNNING), started_at=func.now())
        .where(which)
        .returning(*COLUMNS)
    )
    if not many:
        return compiled(claim)
    # RETURNING has no order: the batch comes back sorted by the claim index's own order.
    claimed = claim.cte("claimed")
    in_claimed = ClauseAdapter(claimed)
    return compiled(
        select(*(claimed.c[column.name] for column in COLUMNS)).order_by(
            *(in_claimed.traverse(expression) for expression in CLAIM_ORDER)  # type: ignore[type-var]
        )
    )


# [by workflow type?] -> SQL
CLAIM_ONE = {by: _claim(False, by) for by in (False, True)}
CLAIM_MANY = {by: _claim(True, by) for by in (False, True)}
IDS = bindparam("ids", type_=ARRAY(UUID))
RUNNING = JOBS.c.status == constant(JobStatus.RUNNING)
ENQUEUE = compiled(
    insert(JOBS)
    .values(
        workflow_type=bindparam("workflow_type"),
        priority=bindparam("priority"),
        media_item_id=bindparam("media_item_id"),
    )
    .returning(*COLUMNS)
)
ENQUEUE_COLUMNS = ("workflow_type", "priority", "media_item_id")
COPY_JOBS = f"COPY {JOBS.name} ({', '.join(ENQUEUE_COLUMNS)}) FROM STDIN"
COMPLETE_MANY = compiled(
    update(JOBS)
    .values(status=constant(JobStatus.COMPLETED), completed_at=func.now())
    .where(JOBS.c.id == any_(IDS), RUNNING)
    .returning(*COLUMNS)
)
_FAILURES = (
    func.unnest(IDS, bindparam("errors", type_=ARRAY(Text)))
    .table_valued("id", "error")
    .render_derived()
    .alias("failure")
)
FAIL_MANY = compiled(
    update(JOBS)
    .values(
        status=constant(JobStatus.FAILED), completed_at=func.now(), error_message=_FAILURES.c.error
    )
    .where(JOBS.c.id == _FAILURES.c.id, RUNNING)
    .returning(*COLUMNS)
)
RELEASE = compiled(
    update(JOBS)
    .values(status=constant(JobStatus.QUEUED), started_at=null())
    .where(JOBS.c.id == any_(IDS), RUNNING)
    .returning(JOBS.c.id)
)
REQUEUE_STUCK = compiled(
    update(JOBS)
    .values(status=constant(JobStatus.QUEUED), started_at=null())
    .where(RUNNING, JOBS.c.started_at < func.now() - bindparam("older_than", type_=Interval))
    .returning(JOBS.c.id)
)
BY_STATUS = compiled(
    select(*COLUMNS)
    .where(JOBS.c.status == bindparam("status", type_=String))
    .order_by(*CLAIM_ORDER)
    .limit(bindparam("limit", type_=Integer))
)
COUNTS = compiled(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
MOVE = compiled(
    update(JOBS)
    .values(
        status=bindparam("to", type_=String),
        completed_at=func.now(),
        error_message=func.coalesce(bindparam("error", type_=Text), JOBS.c.error_message),
    )
    .where(
        JOBS.c.id == bindparam("id"),
        JOBS.c.status == any_(bindparam("allowed", type_=ARRAY(String))),
    )
    .returning(*COLUMNS)
)
STATUS_OF = compiled(select(JOBS.c.status).where(JOBS.c.id == bindparam("id")))


@dataclass(frozen=True)
class NewJob:
    """A job for `enqueue_many`."""

    workflow_type: str
    priority: int = DEFAULT_PRIORITY
    media_item_id: uuid.UUID | str | None = None

    def checked(self) -> tuple[str, int, uuid.UUID | None]:
        """Column values in ENQUEUE_COLUMNS order (raises InvalidInput naming the field)."""
        validation.required_text("workflow_type", self.workflow_type, WORKFLOW_TYPE_LENGTH)
        priority = validation.whole_number("priority", self.priority, PRIORITY)
        item = self.media_item_id
        return (
            self.workflow_type,
            priority,
            None if item is None else validation.as_uuid("media_item_id", item),
        )


class JobQueue:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def enqueue(
        self,
        workflow_type: str,
        priority: int = DEFAULT_PRIORITY,
        media_item_id: uuid.UUID | str | None = None,
    ) -> JobRecord:
        checked = NewJob(workflow_type, priority, media_item_id).checked()
        values = dict(zip(ENQUEUE_COLUMNS, checked, strict=True))
        with media_item_must_exist():
            row = await fetch_one(self.db, ENQUEUE, values, JobRecord.from_row)
        assert row is not None  # INSERT ... RETURNING always returns the row
        return row

    async def enqueue_many(self, jobs: Iterable[NewJob]) -> int:
        """Bulk path: every job is checked first, then all go in one COPY: all are written or
        none. Returns the number written."""
        rows = [job.checked() for job in jobs]
        with media_item_must_exist():
            await self._copy(rows)
        return len(rows)

    async def _copy(self, rows: list[tuple[str, int, uuid.UUID | None]]) -> None:
        async with (
            self.db.connection() as connection,
            connection.cursor() as cursor,
            cursor.copy(COPY_JOBS) as copy,
        ):
            for row in rows:
                await copy.write_row(row)

    async def claim(self, workflow_type: str | None = None) -> JobRecord | None:
        """Moves the next queued job to `running` and returns it; None when the queue is empty."""
        params = self._workflow(workflow_type)
        return await fetch_one(self.db, CLAIM_ONE[bool(params)], params, JobRecord.from_row)

    async def claim_many(self, n: int, workflow_type: str | None = None) -> list[JobRecord]:
        """Moves up to n queued jobs to `running` in one statement and returns them in claim
        order; an empty list when the queue is empty."""
        params = {**self._workflow(workflow_type), "n": validation.whole_number("n", n, BATCH)}
        return await fetch_all(
            self.db, CLAIM_MANY["workflow_type" in params], params, JobRecord.from_row
        )

    async def complete(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(job_id, [JobStatus.RUNNING], JobStatus.COMPLETED)

    async def complete_many(self, job_ids: Iterable[uuid.UUID | str]) -> list[JobRecord]:
        """Marks each listed job that is `running` completed, in one statement, and returns
        those. A listed job no longer running (cancelled, requeued as stuck) is left as it is
        and not returned: compare ids to find it. A malformed id writes nothing."""
        keys = self._ids(job_ids)
        if not keys:
            return []
        return await fetch_all(self.db, COMPLETE_MANY, {"ids": keys}, JobRecord.from_row)

    async def fail(self, job_id: uuid.UUID | str, error_message: str) -> JobRecord:
        message = validation.error_text("error_message", error_message)
        return await self._move(job_id, [JobStatus.RUNNING], JobStatus.FAILED, message)

    async def fail_many(self, errors: Mapping[uuid.UUID | str, str]) -> list[JobRecord]:
        """`complete_many`'s twin: each listed running job becomes `failed` with its message."""
        keys = self._ids(errors)
        messages = [validation.error_text("error_message", errors[key]) for key in errors]
        if not keys:
            return []
        params = {"ids": keys, "errors": messages}
        return await fetch_all(self.db, FAIL_MANY, params, JobRecord.from_row)

    async def release(self, job_ids: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
        """Puts listed jobs that are still `running` back in the queue (a worker that stops
        hands back what it holds). Returns the ids requeued."""
        keys = self._ids(job_ids)
        if not keys:
            return []
        return await fetch_all(self.db, RELEASE, {"ids": keys}, _first)

    async def cancel(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.CANCELLED)

    async def requeue_stuck(self, older_than: timedelta) -> list[uuid.UUID]:
        """Jobs `running` for longer than `older_than` (their worker died) go back to the queue."""
        if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
            raise InvalidInput("older_than", f"must be a positive timedelta, got {older_than!r}")
        return await fetch_all(self.db, REQUEUE_STUCK, {"older_than": older_than}, _first)

    async def by_status(self, status: JobStatus | str, limit: int = 100) -> list[JobRecord]:
        """Jobs in one status, in claim order."""
        wanted = validation.as_status(JobStatus, "status", status)
        params = {"status": wanted, "limit": validation.whole_number("limit", limit, BATCH)}
        return await fetch_all(self.db, BY_STATUS, params, JobRecord.from_row)

    async def counts(self) -> dict[JobStatus, int]:
        """Jobs per status, every status present (zero when none)."""
        found = dict(await fetch_all(self.db, COUNTS, {}, tuple))
        return {status: found.get(status, 0) for status in JobStatus}

    @staticmethod
    def _workflow(workflow_type: str | None) -> dict[str, str]:
        if workflow_type is None:
            return {}
        validation.required_text("workflow_type", workflow_type, WORKFLOW_TYPE_LENGTH)
        return {"workflow_type": workflow_type}

    @staticmethod
    def _ids(job_ids: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
        if isinstance(job_ids, str | uuid.UUID):
            raise InvalidInput("job_ids", "must be a collection of ids, not one id")
        keys = [validation.as_uuid("job_ids", key) for key in job_ids]
        if len(keys) > MAX_BATCH:
            raise InvalidInput("job_ids", f"at most {MAX_BATCH} at once, got {len(keys)}")
        return keys

    async def _move(
        self,
        job_id: uuid.UUID | str,
        allowed: list[JobStatus],
        to: JobStatus,
        error_message: str | None = None,
    ) -> JobRecord:
        key = validation.as_uuid("job_id", job_id)
        values: dict[str, Any] = {"to": to, "error": error_message, "id": key, "allowed": allowed}
        row = await fetch_one(self.db, MOVE, values, JobRecord.from_row)
        if row is not None:
            return row
        found = await fetch_one(self.db, STATUS_OF, {"id": key}, _first)
        if found is None:
            raise NotFound(f"job {key} does not exist")
        wanted = " or ".join(allowed)
        raise InvalidTransition(f"job {key} is {found}, not {wanted}: cannot mark it {to}")


def _first(row: Sequence[Any]) -> Any:
    return row[0]
