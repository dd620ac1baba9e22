"""`JobQueue.cancel(id)` on a running job reaches its worker at once (a notification on the
channel the worker LISTENs on; polling its jobs' status is the fallback): the worker cancels
the handler's task, and the job stays `cancelled`, its lease released, with no outcome
(completed, failed, retried) written over it. Each test leaves the worker one way to learn of
the cancel (polling and lease renewal an hour away otherwise) and a handler that would run for
an hour: its stopping at all is the proof, with no clock to race on a busy machine. How fast a
cancel stops a handler is `make bench`'s to measure. A cancel sent before
the worker's LISTEN was up (no one heard its notification) is found when the LISTEN comes up.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import URL

from media_db import Database, JobQueue, JobRecord, JobStatus, PoolSize, WorkerStats, run_worker

HOUR = 3600.0  # what the worker's other ways of learning of a cancel are set to, and a handler
HANG = 60  # seconds: only against a hang


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
    url: URL, wakeup: bool, poll_interval: float, lease: timedelta = timedelta(hours=1)
) -> tuple[JobRecord, WorkerStats]:
    async with await connected(url) as db:
        queue = JobQueue(db)
        job = await queue.enqueue("analysis")
        started = asyncio.Event()
        stopped = asyncio.Event()

        async def slow_provider_call(claimed: JobRecord) -> None:
            started.set()
            try:
                await asyncio.sleep(HOUR)
            finally:
                stopped.set()

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
        await asyncio.wait_for(started.wait(), HANG)
        if wakeup:  # a cancel reaches a listening worker: wait until it listens
            deadline = time.monotonic() + HANG
            while not await listening(db):
                assert time.monotonic() < deadline, "the worker never listened"
                await asyncio.sleep(0.01)
        cancelled = await queue.cancel(job.id)
        assert cancelled.status == JobStatus.CANCELLED
        await asyncio.wait_for(stopped.wait(), HANG)
        # until_empty: the worker returns once it settled the cancelled job.
        stats = await asyncio.wait_for(worker, HANG)
        return await queue.get(job.id), stats


def test_a_notified_cancel_stops_the_running_handler_and_the_job_stays_cancelled(
    migrated: URL,
) -> None:
    # Polling and renewal an hour away: only the notification can stop it.
    row, stats = asyncio.run(cancel_a_running_job(migrated, True, HOUR))
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
    row, stats = asyncio.run(cancel_a_running_job(migrated, False, 0.2))
    assert row.status == JobStatus.CANCELLED
    assert stats.cancelled == 1
    assert stats.completed == stats.lost == 0


def test_a_lease_renewal_that_finds_its_job_cancelled_counts_it_cancelled_not_lost(
    migrated: URL,
) -> None:
    """Neither listening nor due to poll before its next renewal (a lease of 1.5 s renews
    every 0.5 s): the renewal finds the job no longer held, and cancelled."""
    row, stats = asyncio.run(
        cancel_a_running_job(migrated, False, HOUR, lease=timedelta(seconds=1.5))
    )
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


@contextlib.asynccontextmanager
async def held_at_the_door(url: URL) -> AsyncIterator[tuple[URL, asyncio.Event, asyncio.Event]]:
    """A TCP relay to the server that holds each connection until `opened` is set (`knocked` is
    set once one waits): a LISTEN connection through it is not up until the test says so."""
    knocked, opened = asyncio.Event(), asyncio.Event()

    async def relay(client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        knocked.set()
        await opened.wait()
        server, to_server = await asyncio.open_connection(url.host, url.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(client, to_server), pipe(server, to_client))

    door = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = door.sockets[0].getsockname()[1]
    try:
        yield url.set(host="127.0.0.1", port=port), knocked, opened
    finally:
        door.close()


def test_a_cancel_sent_before_the_worker_listens_is_found_once_it_listens(
    migrated: URL,
) -> None:
    """Neither a poll (every hour) nor a lease renewal (every hour) comes in time: only the
    worker's look at its jobs once its LISTEN is up stops the handler."""

    async def scenario() -> tuple[JobRecord, WorkerStats]:
        async with held_at_the_door(migrated) as (listen_url, knocked, opened):
            db = await Database.connect(migrated, PoolSize(1, 4), direct_url=listen_url)
            async with db:
                queue = JobQueue(db)
                job = await queue.enqueue("analysis")
                started, stopped = asyncio.Event(), asyncio.Event()

                async def slow_provider_call(claimed: JobRecord) -> None:
                    started.set()
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        stopped.set()
                        raise

                worker = asyncio.ensure_future(
                    run_worker(
                        db,
                        slow_provider_call,
                        until_empty=True,
                        poll_interval=3600.0,
                        lease=timedelta(hours=3),
                    )
                )
                await asyncio.wait_for(asyncio.gather(started.wait(), knocked.wait()), 60)
                await queue.cancel(job.id)  # its notification reaches no one
                opened.set()
                # A bound against a hang only: the poll would take an hour.
                await asyncio.wait_for(stopped.wait(), 60)
                stats = await asyncio.wait_for(worker, 60)
                return await queue.get(job.id), stats

    row, stats = asyncio.run(scenario())
    assert row.status == JobStatus.CANCELLED
    assert (stats.cancelled, stats.completed, stats.lost) == (1, 0, 0)
