"""Limits per key hold across the fleet: whatever the number of workers, no more than a key's
`max_running` jobs run at once and no more than `per_second` start per second, because the claim
itself enforces them; a key at its limit starves no other key's jobs. A job's key is its
limit_key, else its workflow type; a key without limits is claimed as before."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import URL

from media_db import Database, InvalidInput, JobQueue, JobRecord, PoolSize, run_worker
from media_db.pool import conninfo
from media_db.repositories.jobs import CLAIM_ONE

RUNNING_OF_KEY = (
    "SELECT count(*) FROM processing_jobs "
    "WHERE status = 'running' AND COALESCE(limit_key, workflow_type) = %s"
)


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 4))


def test_max_running_is_never_exceeded_by_several_workers_and_starves_no_other_key(
    migrated: URL,
) -> None:
    limit, workers, per_key = 3, 4, 40

    async def scenario() -> tuple[int, int, float, float]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.set_limit("openai", max_running=limit)
            # The limited key's jobs first: they head the queue, the others wait behind them.
            for _ in range(per_key):
                await queue.enqueue("analysis", limit_key="openai")
            for _ in range(per_key):
                await queue.enqueue("transcode")
        running = 0
        most = 0
        finished: dict[str, list[float]] = {"openai": [], "transcode": []}

        async def handler(job: JobRecord) -> None:
            nonlocal running, most
            if job.limit_key == "openai":
                running += 1
                most = max(most, running)
                try:
                    await asyncio.sleep(0.03)  # a provider's call
                finally:
                    running -= 1
            finished[job.limit_key or job.workflow_type].append(time.monotonic())

        sampled = 0
        done = asyncio.Event()

        async def sample() -> None:  # the database's own view, continuously
            nonlocal sampled
            async with await psycopg.AsyncConnection.connect(
                conninfo(migrated), autocommit=True
            ) as connection:
                while not done.is_set():
                    row = await (await connection.execute(RUNNING_OF_KEY, ("openai",))).fetchone()
                    assert row is not None
                    sampled = max(sampled, row[0])

        async def worker() -> None:
            async with await connected(migrated) as db:
                await run_worker(
                    db, handler, concurrency=5, batch_size=5, until_empty=True, poll_interval=0.05
                )

        sampler = asyncio.ensure_future(sample())
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), 120)
        done.set()
        await sampler
        return most, sampled, max(finished["transcode"]), max(finished["openai"])

    most, sampled, transcode_done, openai_done = asyncio.run(scenario())
    assert most == limit  # reached, never passed
    assert sampled <= limit
    # The other key's jobs ran beside the limited ones, not after them.
    assert transcode_done < openai_done


def test_a_key_at_its_limit_is_skipped_and_other_keys_are_claimed(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            # No limit_key: the workflow type is the key.
            await queue.set_limit("analysis", max_running=2)
            for _ in range(5):
                await queue.enqueue("analysis", priority=9)
            await queue.enqueue("transcode", priority=1)
            claimed = await queue.claim_many(10)
            assert sorted(job.workflow_type for job in claimed) == [
                "analysis",
                "analysis",
                "transcode",
            ]
            assert [job.workflow_type for job in await queue.claim_many(10)] == []
            assert await queue.claim() is None
            # A slot freed: one more of the key.
            await queue.complete_held([claimed[0]])
            assert [job.workflow_type for job in await queue.claim_many(10)] == ["analysis"]
            # Cleared: the rest go at once.
            await queue.clear_limit("analysis")
            assert len(await queue.claim_many(10, workflow_type="analysis")) == 2
            assert await queue.limits() == []

    asyncio.run(scenario())


def test_no_more_than_per_second_start_per_second(migrated: URL) -> None:
    async def scenario() -> list[int]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            limit = await queue.set_limit("ping", per_second=Decimal(4))
            assert (limit.key, limit.max_running) == ("ping", None)
            assert limit.per_second == Decimal(4)
            # A Decimal is stored as given, to its last digit (it used to pass through a float).
            for exact in (Decimal("0.1234567890123456789"), Decimal("1e-400")):
                assert (await queue.set_limit("exact", per_second=exact)).per_second == exact
            await queue.clear_limit("exact")
            for _ in range(12):
                await queue.enqueue("ping")
            batches = []
            deadline = time.monotonic() + 30
            claimed = 0
            while claimed < 12 and time.monotonic() < deadline:
                batch = len(await queue.claim_many(10))
                claimed += batch
                batches.append(batch)
                await asyncio.sleep(0.01)
            assert claimed == 12
            async with await psycopg.AsyncConnection.connect(conninfo(migrated)) as connection:
                # Every one-second window after a start holds at most 4 starts.
                cursor = await connection.execute(
                    "SELECT max(n) FROM (SELECT (SELECT count(*) FROM processing_jobs o "
                    "WHERE o.started_at >= j.started_at "
                    "AND o.started_at < j.started_at + interval '1 second') AS n "
                    "FROM processing_jobs j) AS windows"
                )
                row = await cursor.fetchone()
                assert row is not None
                assert row[0] <= 4
            return batches

    batches = asyncio.run(scenario())
    assert max(batches) <= 4


def test_a_snoozed_start_still_counts_against_per_second(migrated: URL) -> None:
    """A handler that called its provider and got a 429 snoozes its job: that start counts in
    the key's last second as much as a completed one, or a storm of 429s would start jobs
    faster than per_second."""

    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.set_limit("openai", per_second=2)
            for _ in range(5):
                await queue.enqueue("analysis", limit_key="openai")
            claimed = await queue.claim_many(10)
            assert len(claimed) == 2
            await queue.snooze_held([(job, timedelta(0)) for job in claimed])
            assert await queue.claim_many(10) == []  # two starts in this second already

    asyncio.run(scenario())


def test_limits_refuse_what_they_cannot_hold_in_one_line(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            refused: list[Callable[[], Awaitable[object]]] = [
                lambda: queue.set_limit("analysis"),
                lambda: queue.set_limit("analysis", max_running=0),
                lambda: queue.set_limit("analysis", max_running=2.5),  # type: ignore[arg-type]
                lambda: queue.set_limit("analysis", per_second=0),
                lambda: queue.set_limit("analysis", per_second=float("nan")),
                lambda: queue.set_limit("analysis", per_second=Decimal("NaN")),
                lambda: queue.set_limit("analysis", per_second=Decimal("-1e-400")),
                lambda: queue.set_limit("", max_running=1),
                lambda: queue.set_limit("x" * 51, max_running=1),
            ]
            for bad in refused:
                with pytest.raises(InvalidInput) as raised:
                    await bad()
                assert "\n" not in str(raised.value)
            assert await queue.limits() == []

    asyncio.run(scenario())


def test_a_raw_insert_naming_only_workflow_type_and_media_item_is_limited_by_its_type(
    migrated: URL,
) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.set_limit("analysis", max_running=1)
            async with await psycopg.AsyncConnection.connect(
                conninfo(migrated), autocommit=True
            ) as connection:
                for _ in range(3):
                    await connection.execute(
                        "INSERT INTO processing_jobs (workflow_type, media_item_id) "
                        "VALUES ('analysis', NULL)"
                    )
            claimed = await queue.claim_many(10, lease=timedelta(minutes=1))
            assert len(claimed) == 1
            assert claimed[0].limit_key is None

    asyncio.run(scenario())


def test_a_claim_locks_no_key_it_has_no_due_job_of(migrated: URL) -> None:
    """A claim takes the advisory lock of a limited key only if it has a due job of it in its
    scope: a worker scoped to another type, its claim not yet committed, blocks nothing."""

    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.set_limit("openai", max_running=5)
            openai = await queue.enqueue("analysis", limit_key="openai")
            await queue.enqueue("transcode")
            async with await psycopg.AsyncConnection.connect(conninfo(migrated)) as other:
                params = {"workflow_type": "transcode", "lease": timedelta(seconds=60)}
                cursor = await other.execute(CLAIM_ONE[True], params)
                assert len(await cursor.fetchall()) == 1  # held, not committed
                claimed = await queue.claim(workflow_type="analysis")
                assert claimed is not None
                assert claimed.id == openai.id
                await other.rollback()

    asyncio.run(scenario())


def test_a_key_whose_claim_is_in_flight_is_skipped_not_waited_for(migrated: URL) -> None:
    """Claims of one limited key take turns without waiting: while one holds the key (not yet
    committed), another claim skips that key and takes other keys' jobs."""

    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.set_limit("openai", max_running=5)
            for _ in range(2):
                await queue.enqueue("analysis", limit_key="openai", priority=9)
            # Two: the claim in flight also locks (and leaves) the first one it read of the
            # keys without limits, until it commits.
            for _ in range(2):
                await queue.enqueue("transcode", priority=1)
            async with await psycopg.AsyncConnection.connect(conninfo(migrated)) as other:
                params = {"lease": timedelta(seconds=60)}
                cursor = await other.execute(CLAIM_ONE[False], params)
                [(_, _, held_type, *_)] = await cursor.fetchall()
                assert held_type == "analysis"
                claimed = await asyncio.wait_for(queue.claim_many(10), 5)
                assert [job.workflow_type for job in claimed] == ["transcode"]
                await other.commit()
            # Committed: the key's lock is free, its second job goes (and the last transcode).
            claimed = await queue.claim_many(10)
            assert sorted(job.workflow_type for job in claimed) == ["analysis", "transcode"]

    asyncio.run(scenario())
