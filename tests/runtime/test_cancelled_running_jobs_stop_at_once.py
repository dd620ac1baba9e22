"""`JobQueue.cancel(id)` on a running job reaches its worker at once (a notification on the
channel the worker LISTENs on; polling its jobs' status is the fallback): the worker cancels
the handler's task, which stops within a second, and the job stays `cancelled`, its lease
released, with no outcome (completed, failed, retried) written over it."""

import asyncio
import time
from datetime import timedelta

from sqlalchemy import URL

from media_db import Database, JobQueue, JobRecord, JobStatus, PoolSize, WorkerStats, run_worker

STOPS_WITHIN = 1.0  # seconds from the cancel's return to the handler's end


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 4))


async def listening(db: Database) -> bool:
    """Whether a session of ours (the worker's) has issued its LISTEN."""
    async with db.connection() as connection:
        cursor = await connection.execute(
            "SELECT count(*) AS sessions FROM pg_stat_activity WHERE datname = "
            "current_database() AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
        )
        found = await cursor.fetchone()
    return bool(found and found["sessions"])


async def cancel_a_running_job(
    url: URL, wakeup: bool, poll_interval: float, lease: timedelta = timedelta(seconds=60)
) -> tuple[float, JobRecord, WorkerStats]:
    async with await connected(url) as db:
        queue = JobQueue(db)
        job = await queue.enqueue("analysis")
        started = asyncio.Event()
        stopped_at: list[float] = []

        async def slow_provider_call(claimed: JobRecord) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            finally:
                stopped_at.append(time.monotonic())

        worker = asyncio.ensure_future(
            run_worker(
                db,
                slow_provider_call,
                until_empty=True,
                wakeup=wakeup,
                poll_interval=poll_interval,
                lease=lease,
            )
        )
        await asyncio.wait_for(started.wait(), 30)
        if wakeup:  # a cancel reaches a listening worker: wait until it listens
            deadline = time.monotonic() + 30
            while not await listening(db):
                assert time.monotonic() < deadline, "the worker never listened"
                await asyncio.sleep(0.01)
        cancelled = await queue.cancel(job.id)
        assert cancelled.status == JobStatus.CANCELLED
        asked = time.monotonic()
        deadline = asked + 10
        while not stopped_at:  # the condition, with a deadline (the assertion checks the time)
            assert time.monotonic() < deadline, "the handler was never stopped"
            await asyncio.sleep(0.005)
        # until_empty: the worker returns once it settled the cancelled job.
        stats = await asyncio.wait_for(worker, 30)
        return stopped_at[0] - asked, await queue.get(job.id), stats


def test_a_cancelled_running_job_stops_within_a_second_and_stays_cancelled(
    migrated: URL,
) -> None:
    # A poll every 30 s: only the notification can stop it in time.
    took, row, stats = asyncio.run(cancel_a_running_job(migrated, True, 30.0))
    assert took < STOPS_WITHIN
    assert row.status == JobStatus.CANCELLED
    assert (row.lease_token, row.locked_until) == (None, None)
    assert row.error_message is None
    assert row.attempts == 1
    assert (stats.cancelled, stats.completed, stats.failed, stats.retried, stats.lost) == (
        1,
        0,
        0,
        0,
        0,
    )


def test_without_its_notification_the_worker_finds_the_cancel_by_polling(migrated: URL) -> None:
    took, row, stats = asyncio.run(cancel_a_running_job(migrated, False, 0.2))
    assert took < STOPS_WITHIN
    assert row.status == JobStatus.CANCELLED
    assert stats.cancelled == 1
    assert stats.completed == stats.lost == 0


def test_a_lease_renewal_that_finds_its_job_cancelled_counts_it_cancelled_not_lost(
    migrated: URL,
) -> None:
    """Neither listening nor due to poll before its next renewal (a lease of 1.5 s renews
    every 0.5 s): the renewal finds the job no longer held, and cancelled."""
    took, row, stats = asyncio.run(
        cancel_a_running_job(migrated, False, 30.0, lease=timedelta(seconds=1.5))
    )
    assert took < STOPS_WITHIN
    assert row.status == JobStatus.CANCELLED
    assert (stats.cancelled, stats.lost) == (1, 0)


def test_a_cancel_that_reaches_a_finished_handler_keeps_the_job_cancelled(migrated: URL) -> None:
    """The handler returned before the cancel; its completion, written after, finds the job no
    longer running and writes nothing."""

    async def scenario() -> tuple[JobRecord, list[JobRecord]]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue("analysis")
            claimed = await queue.claim()
            assert claimed is not None
            await queue.cancel(claimed.id)
            written = await queue.complete_held([claimed])
            written += await queue.fail_held([(claimed, "late")], timedelta(seconds=1))
            return await queue.get(claimed.id), written

    row, written = asyncio.run(scenario())
    assert written == []
    assert row.status == JobStatus.CANCELLED
