"""The processing job queue.

`claim` is one statement: the inner SELECT picks the best queued job and locks it with
FOR UPDATE SKIP LOCKED, so concurrent workers each get a different job without waiting on each
other; the UPDATE moves it to `running`. A job is never claimed twice, and none is lost.
Order: highest priority first, then oldest. (PostgreSQL sorts NULL first in DESC order, as the
plan's priority index does; enqueue never writes a NULL priority.)
"""

import uuid
from datetime import timedelta
from typing import Any

from media_db import validation as check
from media_db.pool import Database
from media_db.records import JobRecord, column_list
from models import JobStatus

COLUMNS = column_list(JobRecord)
CLAIM = f"""
    UPDATE processing_jobs SET status = 'running', started_at = now()
    WHERE id = (
        SELECT id FROM processing_jobs
        WHERE status = 'queued' AND (%(workflow_type)s::text IS NULL
                                     OR workflow_type = %(workflow_type)s)
        ORDER BY priority DESC, created_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING {COLUMNS}
"""


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
        item = None if media_item_id is None else check.as_uuid("media_item_id", media_item_id)
        insert = (
            "INSERT INTO processing_jobs (workflow_type, priority, media_item_id) "
            f"VALUES (%s, %s, %s) RETURNING {COLUMNS}"
        )
        async with self.db.connection() as connection:
            row = await (
                await connection.execute(insert, (workflow_type, priority, item))
            ).fetchone()
        assert row is not None
        return JobRecord.from_row(row)

    async def claim(self, workflow_type: str | None = None) -> JobRecord | None:
        """Moves the next queued job to `running` and returns it; None when the queue is empty."""
        if workflow_type is not None:
            check.required_text("workflow_type", workflow_type, max_length=50)
        async with self.db.connection() as connection:
            cursor = await connection.execute(CLAIM, {"workflow_type": workflow_type})
            row = await cursor.fetchone()
        return JobRecord.from_row(row) if row else None

    async def complete(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(job_id, [JobStatus.RUNNING], JobStatus.COMPLETED)

    async def fail(self, job_id: uuid.UUID | str, error_message: str) -> JobRecord:
        check.required_text("error_message", error_message)
        return await self._move(job_id, [JobStatus.RUNNING], JobStatus.FAILED, error_message)

    async def cancel(self, job_id: uuid.UUID | str) -> JobRecord:
        return await self._move(job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.CANCELLED)

    async def requeue_stuck(self, older_than: timedelta) -> list[uuid.UUID]:
        """Jobs `running` for longer than `older_than` (their worker died) go back to the queue."""
        if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
            raise check.InvalidInput(
                "older_than", f"must be a positive timedelta, got {older_than!r}"
            )
        update = (
            "UPDATE processing_jobs SET status = 'queued', started_at = NULL "
            "WHERE status = 'running' AND started_at < now() - %s RETURNING id"
        )
        async with self.db.connection() as connection:
            rows = await (await connection.execute(update, (older_than,))).fetchall()
        return [row["id"] for row in rows]

    async def by_status(self, status: JobStatus | str, limit: int = 100) -> list[JobRecord]:
        """Jobs in one status, in claim order."""
        wanted = check.as_status(JobStatus, "status", status)
        query = (
            f"SELECT {COLUMNS} FROM processing_jobs WHERE status = %s "
            "ORDER BY priority DESC, created_at LIMIT %s"
        )
        async with self.db.connection() as connection:
            rows = await (await connection.execute(query, (wanted, limit))).fetchall()
        return [JobRecord.from_row(row) for row in rows]

    async def counts(self) -> dict[JobStatus, int]:
        """Jobs per status, every status present (zero when none)."""
        query = "SELECT status, count(*) AS n FROM processing_jobs GROUP BY status"
        async with self.db.connection() as connection:
            rows = await (await connection.execute(query)).fetchall()
        found = {row["status"]: row["n"] for row in rows}
        return {status: found.get(status, 0) for status in JobStatus}

    async def _move(
        self,
        job_id: uuid.UUID | str,
        allowed: list[JobStatus],
        to: JobStatus,
        error_message: str | None = None,
    ) -> JobRecord:
        key = check.as_uuid("job_id", job_id)
        update = (
            "UPDATE processing_jobs SET status = %(to)s, completed_at = now(), "
            "error_message = coalesce(%(error)s, error_message) "
            f"WHERE id = %(id)s AND status = ANY(%(allowed)s) RETURNING {COLUMNS}"
        )
        values: dict[str, Any] = {"to": to, "error": error_message, "id": key, "allowed": allowed}
        async with self.db.connection() as connection:
            row = await (await connection.execute(update, values)).fetchone()
            if row is None:
                cursor = await connection.execute(
                    "SELECT status FROM processing_jobs WHERE id = %s", (key,)
                )
                found = await cursor.fetchone()
                if found is None:
                    raise check.NotFound(f"job {key} does not exist")
                wanted = " or ".join(allowed)
                raise check.InvalidTransition(
                    f"job {key} is {found['status']}, not {wanted}: cannot mark it {to}"
                )
        return JobRecord.from_row(row)
