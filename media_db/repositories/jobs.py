"""The processing job queue.

`claim` is one statement: the inner SELECT picks the best queued job and locks it with
FOR UPDATE SKIP LOCKED, so concurrent workers each get a different job without waiting on each
other; the UPDATE moves it to `running`. A job is never claimed twice, and none is lost.
Order: highest priority first (PostgreSQL sorts NULL first in DESC order, as the plan's index
does), then oldest.
"""

import uuid
from dataclasses import fields
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select, update

from media_db import validation as check
from media_db.pool import Database
from media_db.records import JobRecord
from models import Base, JobStatus, ProcessingJob

TABLE = Base.metadata.tables[ProcessingJob.__tablename__]
COLUMNS = [TABLE.c[f.name] for f in fields(JobRecord)]


class JobQueue:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def enqueue(
        self, workflow_type: str, priority: int = 5, media_item_id: uuid.UUID | str | None = None
    ) -> JobRecord:
        check.required_text("workflow_type", workflow_type, max_length=50)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise check.InvalidInput("priority", f"{priority!r} is not a whole number")
        check.non_negative("priority", priority)
        values: dict[str, Any] = {"workflow_type": workflow_type, "priority": priority}
        if media_item_id is not None:
            values["media_item_id"] = check.as_uuid("media_item_id", media_item_id)
        async with self.db.transaction() as connection:
            row = (await connection.execute(insert(TABLE).values(values).returning(*COLUMNS))).one()
        return JobRecord.from_row(row)

    async def claim(self, workflow_type: str | None = None) -> JobRecord | None:
        """Moves the next queued job to `running` and returns it; None when the queue is empty."""
        candidates = select(TABLE.c.id).where(TABLE.c.status == JobStatus.QUEUED)
        if workflow_type is not None:
            check.required_text("workflow_type", workflow_type, max_length=50)
            candidates = candidates.where(TABLE.c.workflow_type == workflow_type)
        candidate = (
            candidates.order_by(TABLE.c.priority.desc(), TABLE.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(TABLE)
            .where(TABLE.c.id == candidate)
            .values(status=JobStatus.RUNNING, started_at=func.now())
            .returning(*COLUMNS)
        )
        async with self.db.transaction() as connection:
            row = (await connection.execute(statement)).first()
        return JobRecord.from_row(row) if row else None

    async def complete(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(
            job_id, {JobStatus.RUNNING}, JobStatus.COMPLETED, completed_at=func.now()
        )

    async def fail(self, job_id: uuid.UUID | str, error_message: str) -> JobRecord:
        check.required_text("error_message", error_message)
        return await self._move(
            job_id,
            {JobStatus.RUNNING},
            JobStatus.FAILED,
            error_message=error_message,
            completed_at=func.now(),
        )

    async def cancel(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(
            job_id,
            {JobStatus.QUEUED, JobStatus.RUNNING},
            JobStatus.CANCELLED,
            completed_at=func.now(),
        )

    async def requeue_stuck(self, older_than: timedelta) -> list[uuid.UUID]:
        """Jobs `running` for longer than `older_than` (their worker died) go back to the queue."""
        if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
            raise check.InvalidInput(
                "older_than", f"must be a positive timedelta, got {older_than!r}"
            )
        statement = (
            update(TABLE)
            .where(
                TABLE.c.status == JobStatus.RUNNING, TABLE.c.started_at < func.now() - older_than
            )
            .values(status=JobStatus.QUEUED, started_at=None)
            .returning(TABLE.c.id)
        )
        async with self.db.transaction() as connection:
            return list((await connection.scalars(statement)).all())

    async def by_status(self, status: JobStatus | str, limit: int = 100) -> list[JobRecord]:
        """Jobs in one status, in claim order."""
        wanted = check.as_status(JobStatus, "status", status)
        query = (
            select(*COLUMNS)
            .where(TABLE.c.status == wanted)
            .order_by(TABLE.c.priority.desc(), TABLE.c.created_at)
            .limit(limit)
        )
        async with self.db.transaction() as connection:
            return [JobRecord.from_row(row) for row in await connection.execute(query)]

    async def counts(self) -> dict[JobStatus, int]:
        """Jobs per status, every status present (zero when none)."""
        query = select(TABLE.c.status, func.count()).group_by(TABLE.c.status)
        async with self.db.transaction() as connection:
            found = {status: count for status, count in await connection.execute(query)}
        return {status: found.get(status, 0) for status in JobStatus}

    async def _move(
        self, job_id: uuid.UUID | str, allowed: set[JobStatus], to: JobStatus, **values: Any
    ) -> JobRecord:
        key = check.as_uuid("job_id", job_id)
        statement = (
            update(TABLE)
            .where(TABLE.c.id == key, TABLE.c.status.in_(allowed))
            .values(status=to, **values)
            .returning(*COLUMNS)
        )
        async with self.db.transaction() as connection:
            row = (await connection.execute(statement)).first()
            if row is None:
                status = await connection.scalar(select(TABLE.c.status).where(TABLE.c.id == key))
                if status is None:
                    raise check.NotFound(f"job {key} does not exist")
                wanted = " or ".join(sorted(allowed))
                raise check.InvalidTransition(
                    f"job {key} is {status}, not {wanted}: cannot mark it {to}"
                )
        return JobRecord.from_row(row)
