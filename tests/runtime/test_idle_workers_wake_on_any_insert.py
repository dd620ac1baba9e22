"""An INSERT into processing_jobs by any writer, n8n's raw SQL included, wakes an idle worker
at once (LISTEN/NOTIFY), long before its next poll; and a slow handler never holds back the
others: the worker claims more as slots free up."""

import asyncio
import time
from datetime import timedelta

from sqlalchemy import URL, create_engine, pool, text

from media_db import Database, JobQueue, JobRecord, PoolSize, run_worker

POLL_SECONDS = 60.0  # far longer than any wait below: only a wakeup can explain a prompt start


def raw_insert(url: URL) -> None:
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(
            text("INSERT INTO processing_jobs (workflow_type, media_item_id) VALUES ('n8n', NULL)")
        )


def test_a_raw_insert_wakes_an_idle_worker_before_its_next_poll(migrated: URL) -> None:
    async def scenario() -> float:
        async with await Database.connect(migrated, PoolSize(1, 4)) as db:
            started = asyncio.Event()

            async def handler(job: JobRecord) -> None:
                assert job.attempts == 1
                assert job.max_attempts >= 1
                started.set()

            worker = asyncio.create_task(run_worker(db, handler, poll_interval=POLL_SECONDS))
            # The worker is idle once it has listened and found nothing: wait for its session.
            await asyncio.wait_for(listening(migrated), timeout=60)
            await asyncio.sleep(0)
            inserted = time.monotonic()
            await asyncio.to_thread(raw_insert, migrated)
            await asyncio.wait_for(started.wait(), timeout=POLL_SECONDS / 2)
            waited = time.monotonic() - inserted
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            return waited

    assert asyncio.run(scenario()) < POLL_SECONDS / 2


async def listening(url: URL) -> None:
    def seen() -> bool:
        with create_engine(url, poolclass=pool.NullPool).connect() as connection:
            return bool(
                connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query LIKE 'LISTEN %' AND state = 'idle'"
                    )
                )
            )

    while not await asyncio.to_thread(seen):
        await asyncio.sleep(0.05)


def test_a_slow_handler_does_not_hold_back_the_others(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 4)) as db:
            queue = JobQueue(db)
            slow = await queue.enqueue("transcode", priority=9)
            for _ in range(20):
                await queue.enqueue("transcode", priority=1)
            release = asyncio.Event()
            fast_done = 0

            async def handler(job: JobRecord) -> None:
                nonlocal fast_done
                if job.id == slow.id:
                    await release.wait()
                else:
                    fast_done += 1
                    if fast_done == 20:
                        release.set()  # the fast ones all finished while the slow one ran

            stats = await asyncio.wait_for(
                run_worker(
                    db,
                    handler,
                    until_empty=True,
                    concurrency=2,
                    batch_size=2,
                    lease=timedelta(seconds=30),
                ),
                timeout=120,
            )
            assert stats.completed == 21

    asyncio.run(scenario())
