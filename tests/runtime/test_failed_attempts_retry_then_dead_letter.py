"""A handler that raises puts its job back, due after a jittered exponential backoff, until its
attempts reach max_attempts; then the job is `failed` (the dead letter) with its error kept, and
`retry` puts it back by hand. A job is never claimed before its run_at, and `until_empty` waits
for jobs scheduled later. A handler past `handler_timeout` counts as a failed attempt."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import URL

from media_db import Database, InvalidInput, JobQueue, JobRecord, PoolSize, run_worker
from media_db.repositories.jobs import backoff

FAST = timedelta(milliseconds=20)


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 4))


def test_a_job_failing_twice_completes_on_its_third_attempt(migrated: URL) -> None:
    async def scenario() -> tuple[JobRecord, list[int], int]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("transcode")
            seen: list[int] = []

            async def flaky(claimed: JobRecord) -> None:
                seen.append(claimed.attempts)
                if claimed.attempts < 3:
                    raise RuntimeError(f"provider rate limit on attempt {claimed.attempts}")

            stats = await run_worker(
                db, flaky, workflow_type="transcode", until_empty=True, retry_backoff=FAST
            )
            [done] = await queue.by_status("completed")
            assert done.id == job.id
            return done, seen, stats.retried

    done, seen, retried = asyncio.run(scenario())
    assert seen == [1, 2, 3]
    assert retried == 2
    assert done.attempts == 3
    assert done.lease_token is None
    assert done.locked_until is None


def test_a_job_that_always_fails_ends_failed_after_max_attempts_and_retry_requeues_it(
    migrated: URL,
) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("transcode", max_attempts=3)
            calls = Counter[int]()

            async def broken(claimed: JobRecord) -> None:
                calls[claimed.attempts] += 1
                raise ValueError("unsupported codec\x00 in stream")  # a NUL, as providers send

            stats = await run_worker(db, broken, until_empty=True, retry_backoff=FAST)
            assert calls == {1: 1, 2: 1, 3: 1}
            assert (stats.failed, stats.retried, stats.completed) == (1, 2, 0)
            [dead] = await queue.by_status("failed")
            assert dead.id == job.id
            assert dead.attempts == 3
            assert dead.error_message == "ValueError: unsupported codec\ufffd in stream"

            assert await queue.retry([job.id]) == [job.id]
            [again] = await queue.by_status("queued")
            assert again.attempts == 0
            assert await queue.retry([job.id]) == []  # only failed jobs go back

    asyncio.run(scenario())


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    base = timedelta(seconds=10)
    for attempt, expected in [(1, 10), (2, 20), (3, 40), (4, 80)]:
        waits = [backoff(attempt, base).total_seconds() for _ in range(200)]
        assert expected * 0.5 <= min(waits)
        assert max(waits) < expected * 1.5
        assert len(set(waits)) > 100, "no jitter"
    assert backoff(40, base) < timedelta(hours=1.5)


def test_a_failed_attempt_is_not_claimed_again_before_its_backoff(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode")
            claimed = await queue.claim()
            assert claimed is not None
            [back] = await queue.fail_held([(claimed, "boom")], timedelta(hours=1))
            assert back.status == "queued"
            assert back.error_message == "boom"
            assert back.run_at > datetime.now(UTC) + timedelta(minutes=29)
            assert await queue.claim() is None

    asyncio.run(scenario())


def test_a_scheduled_job_waits_for_its_run_at_and_until_empty_waits_for_it(
    migrated: URL,
) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            due = datetime.now(UTC) + timedelta(seconds=2)
            job = await queue.enqueue("transcode", run_at=due)
            assert await queue.claim() is None
            started: list[datetime] = []

            async def handler(claimed: JobRecord) -> None:
                started.append(datetime.now(UTC))

            stats = await run_worker(db, handler, until_empty=True, poll_interval=0.1)
            assert stats.completed == 1
            assert started[0] >= job.run_at  # never before its run_at (server and client agree)

    asyncio.run(scenario())


def test_a_handler_past_its_timeout_is_a_failed_attempt(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode", max_attempts=1)

            async def hangs(claimed: JobRecord) -> None:
                await asyncio.Event().wait()

            stats = await run_worker(
                db, hangs, until_empty=True, handler_timeout=timedelta(milliseconds=200)
            )
            assert stats.failed == 1
            [dead] = await queue.by_status("failed")
            assert dead.error_message is not None
            assert "handler_timeout" in dead.error_message

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_attempts", 0), ("max_attempts", 1.5), ("run_at", datetime(2030, 1, 1))],
)
def test_enqueue_refuses_a_bad_schedule_or_attempt_count(
    migrated: URL, field: str, value: object
) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            with pytest.raises(InvalidInput, match=field):
                await JobQueue(db).enqueue("transcode", **{field: value})  # type: ignore[arg-type]

    asyncio.run(scenario())
