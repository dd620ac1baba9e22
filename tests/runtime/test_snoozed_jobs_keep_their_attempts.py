"""A handler that raises RetryAfter(seconds) snoozes its job: back to `queued`, due after those
seconds, its lease released and its attempt not spent, the snooze counted. A rate limit longer
than max_attempts failures therefore dead-letters nothing; past `max_snoozes` a snooze counts as
a failed attempt, with an error saying so. Seconds that are negative, NaN, infinite or not a
number are refused in one line."""

import asyncio
import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import URL, create_engine, pool, text

import media_db
from media_db import Database, InvalidInput, JobQueue, JobRecord, PoolSize, RetryAfter, run_worker
from media_db.models.media import DEFAULT_MAX_SNOOZES


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 4))


def test_a_snooze_requeues_the_job_after_its_delay_with_the_attempt_given_back(
    migrated: URL,
) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue("analysis")
            claimed = await queue.claim()
            assert claimed is not None
            assert claimed.attempts == 1
            before = datetime.now(UTC)
            [snoozed] = await queue.snooze_held([(claimed, timedelta(minutes=10))])
            assert snoozed.status == "queued"
            assert snoozed.attempts == 0
            assert snoozed.snoozes == 1
            assert (snoozed.lease_token, snoozed.locked_until) == (None,) * 2
            # Its start is kept: a key's per_second limit counts it (the provider was called).
            assert snoozed.started_at == claimed.started_at
            assert snoozed.run_at >= before + timedelta(minutes=9, seconds=59)
            assert await queue.claim() is None  # not before its delay
            # Only the lease's holder snoozes: a second snooze of the same claim writes nothing.
            assert await queue.snooze_held([(claimed, timedelta(0))]) == []

    asyncio.run(scenario())


def test_a_rate_limit_longer_than_max_attempts_failures_dead_letters_nothing(
    migrated: URL,
) -> None:
    async def scenario() -> tuple[JobRecord, list[datetime], int]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("analysis", max_attempts=1)
            starts: list[datetime] = []

            async def throttled(claimed: JobRecord) -> None:
                starts.append(datetime.now(UTC))
                if len(starts) <= 4:
                    raise RetryAfter(0.2)  # the provider's Retry-After

            stats = await run_worker(db, throttled, until_empty=True, poll_interval=0.05)
            return await queue.get(job.id), starts, stats.snoozed

    done, starts, snoozed = asyncio.run(scenario())
    assert done.status == "completed"
    assert done.attempts == 1  # four snoozes spent none of its single attempt
    assert done.snoozes == 4
    assert snoozed == 4
    for earlier, later in itertools.pairwise(starts):
        assert later - earlier >= timedelta(seconds=0.2)


def test_past_max_snoozes_a_snooze_is_a_failed_attempt_saying_so(migrated: URL) -> None:
    async def scenario() -> JobRecord:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("analysis", max_attempts=1, max_snoozes=2)

            async def always_throttled(claimed: JobRecord) -> None:
                raise RetryAfter(timedelta(0))

            stats = await run_worker(db, always_throttled, until_empty=True)
            assert (stats.snoozed, stats.failed) == (2, 1)
            return await queue.get(job.id)

    dead = asyncio.run(scenario())
    assert dead.status == "failed"
    assert dead.snoozes == 2
    assert dead.attempts == 1
    assert dead.error_message is not None
    assert dead.error_message.startswith("RetryAfter: snoozed 2 times, its max_snoozes (2)")
    assert dead.error_traceback is not None
    assert "RetryAfter: retry after 0 s" in dead.error_traceback


@pytest.mark.parametrize("seconds", [-1, -0.001, math.nan, math.inf, 10**400, "60", True, None])
def test_retry_after_refuses_seconds_that_are_not_a_finite_non_negative_number(
    seconds: object,
) -> None:
    with pytest.raises(InvalidInput, match=r"^RetryAfter: seconds must be a number of seconds"):
        RetryAfter(seconds)  # type: ignore[arg-type]


def test_a_bad_retry_after_is_a_failed_attempt_with_its_one_line_error(migrated: URL) -> None:
    async def scenario() -> JobRecord:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            job = await queue.enqueue("analysis", max_attempts=1)

            async def confused(claimed: JobRecord) -> None:
                raise RetryAfter(-5)

            await run_worker(db, confused, until_empty=True)
            return await queue.get(job.id)

    dead = asyncio.run(scenario())
    assert dead.status == "failed"
    assert dead.snoozes == 0
    assert dead.error_message == (
        "InvalidInput: RetryAfter: seconds must be a number of seconds from 0 to 2.592e+06 "
        "(30 days), got -5"
    )


def test_retry_after_is_importable_from_media_db_and_is_no_error_of_the_data_layer() -> None:
    assert media_db.RetryAfter is RetryAfter
    assert not issubclass(RetryAfter, media_db.MediaDbError)
    assert RetryAfter(90).delay == timedelta(seconds=90)


def test_a_raw_insert_gets_the_snooze_defaults(migrated: URL) -> None:
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.begin() as connection:
        row = connection.execute(
            text(
                "INSERT INTO processing_jobs (workflow_type, media_item_id) "
                "VALUES ('analysis', NULL) RETURNING snoozes, max_snoozes"
            )
        ).one()
    engine.dispose()
    assert tuple(row) == (0, DEFAULT_MAX_SNOOZES)
