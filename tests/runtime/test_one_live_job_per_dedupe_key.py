"""At most one live (queued or running) job per dedupe key, held by the partial unique index
idx_processing_jobs_dedupe_key: enqueueing a key that is live returns the live job and writes
nothing (not even a dead row), by the API (`enqueue`, `enqueue_many`) or by n8n's documented
`INSERT ... ON CONFLICT DO NOTHING`; the same analysis enqueued twice runs once. Once the job
finished the key is free again; `retry` never puts a second job on a live key. Jobs without a
key are never deduplicated."""

import asyncio
import re
import uuid
from collections import Counter

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db import (
    Database,
    InvalidInput,
    JobQueue,
    JobRecord,
    NewJob,
    PoolSize,
    run_worker,
)
from tests.helpers import REPO_ROOT

# n8n's form, exactly as docs/queue.md gives it.
N8N_DEDUPED_INSERT = (
    "INSERT INTO processing_jobs (workflow_type, media_item_id, dedupe_key)\n"
    "VALUES ('analysis', NULL, 'analysis:42:openai')\n"
    "ON CONFLICT DO NOTHING;"
)
KEY = "analysis:42:openai"


async def connected(url: URL) -> Database:
    return await Database.connect(url, PoolSize(1, 8))


def sql(url: URL, statement: str) -> list[tuple[object, ...]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        result = connection.execute(text(statement))
        rows = [tuple(row) for row in result] if result.returns_rows else []
    engine.dispose()
    return rows


def heap_slot(url: URL, job_id: uuid.UUID) -> str:
    """Where the row lies in the table: a write left between two inserts moves the next one."""
    [(ctid,)] = sql(url, f"SELECT ctid::text FROM processing_jobs WHERE id = '{job_id}'")
    return str(ctid)


def test_enqueueing_a_live_key_returns_the_live_job_and_writes_nothing(migrated: URL) -> None:
    async def scenario() -> tuple[JobRecord, list[JobRecord], JobRecord]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            first = await queue.enqueue("analysis", dedupe_key=KEY)
            again = [await queue.enqueue("analysis", 9, dedupe_key=KEY) for _ in range(3)]
            other = await queue.enqueue("analysis", dedupe_key="analysis:43:openai")
            return first, again, other

    first, again, other = asyncio.run(scenario())
    assert {job.id for job in again} == {first.id}
    assert {job.priority for job in again} == {first.priority}  # the live job, as it is
    assert first.dedupe_key == KEY
    # Nothing was written by the three duplicates: the next row is the next slot.
    assert heap_slot(migrated, first.id) == "(0,1)"
    assert heap_slot(migrated, other.id) == "(0,2)"
    assert sql(migrated, "SELECT count(*) FROM processing_jobs") == [(2,)]


def test_concurrent_enqueues_of_one_key_all_get_the_same_job(migrated: URL) -> None:
    async def scenario() -> list[JobRecord]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            return await asyncio.gather(
                *(queue.enqueue("analysis", dedupe_key=KEY) for _ in range(40))
            )

    jobs = asyncio.run(scenario())
    assert len({job.id for job in jobs}) == 1
    assert sql(migrated, "SELECT count(*) FROM processing_jobs") == [(1,)]


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
def test_a_key_is_free_again_once_its_job_finished(migrated: URL, finish: str) -> None:
    async def scenario() -> tuple[JobRecord, JobRecord, JobRecord]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            first = await queue.enqueue("analysis", dedupe_key=KEY)
            claimed = await queue.claim()
            assert claimed is not None
            assert (await queue.enqueue("analysis", dedupe_key=KEY)).id == first.id  # running
            if finish == "fail":
                await queue.fail(first.id, "provider down")
            else:
                await getattr(queue, finish)(first.id)
            second = await queue.enqueue("analysis", dedupe_key=KEY)
            return first, second, await queue.get(first.id)

    first, second, finished = asyncio.run(scenario())
    assert second.id != first.id
    assert second.status == "queued"
    assert finished.dedupe_key == KEY  # the finished job keeps its key


def test_enqueue_many_leaves_out_jobs_whose_key_is_live_or_taken_earlier_in_the_batch(
    migrated: URL,
) -> None:
    async def scenario() -> tuple[int, Counter[str | None]]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue("analysis", dedupe_key="live")
            written = await queue.enqueue_many(
                [
                    NewJob("analysis", dedupe_key="live"),
                    NewJob("analysis", dedupe_key="new"),
                    NewJob("analysis", dedupe_key="new"),
                    NewJob("analysis"),
                    NewJob("analysis"),
                ]
            )
            jobs = await queue.by_status("queued", 500)
            return written, Counter(job.dedupe_key for job in jobs)

    written, keys = asyncio.run(scenario())
    assert written == 3
    assert keys == {"live": 1, "new": 1, None: 2}


def test_n8n_documented_insert_on_conflict_do_nothing_runs_the_analysis_once(
    migrated: URL,
) -> None:
    for page in ("docs/queue.md", "README.md"):
        assert N8N_DEDUPED_INSERT in (REPO_ROOT / page).read_text(), page
    # Rows this backend wrote (heap inserts, kept or not), not yet flushed to the statistics.
    inserts = text("SELECT pg_stat_get_xact_tuples_inserted('processing_jobs'::regclass)")
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.connect() as connection:
        for expected in (1, 0):  # n8n's webhook retried: the second writes nothing
            before = connection.execute(inserts).scalar_one()
            inserted = connection.exec_driver_sql(N8N_DEDUPED_INSERT)
            assert inserted.rowcount == expected
            # No row at all, not even a dead one.
            assert connection.execute(inserts).scalar_one() - before == expected
            connection.commit()
    engine.dispose()

    async def scenario() -> tuple[JobRecord, list[str | None]]:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            from_api = await queue.enqueue("analysis", dedupe_key=KEY)  # and the API's retry
            ran: list[str | None] = []

            async def analyse(job: JobRecord) -> None:
                ran.append(job.dedupe_key)

            await run_worker(db, analyse, workflow_type="analysis", until_empty=True)
            return from_api, ran

    from_api, ran = asyncio.run(scenario())
    assert ran == [KEY]
    assert sql(migrated, "SELECT count(*), min(status) FROM processing_jobs") == [(1, "completed")]
    assert from_api.dedupe_key == KEY


def test_raw_inserts_without_a_key_are_never_deduplicated(migrated: URL) -> None:
    for _ in range(2):
        sql(
            migrated,
            "INSERT INTO processing_jobs (workflow_type, media_item_id) VALUES ('analysis', NULL) "
            "ON CONFLICT DO NOTHING",
        )
    assert sql(migrated, "SELECT count(*), count(dedupe_key) FROM processing_jobs") == [(2, 0)]


def test_retry_never_puts_a_second_job_on_a_live_key(migrated: URL) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            failed = []
            for _ in range(3):  # three failed jobs of one key, one after the other
                job = await queue.enqueue("analysis", dedupe_key=KEY)
                assert await queue.claim() is not None
                failed.append((await queue.fail(job.id, "provider down")).id)
            # One goes back, the lowest id of those asked: the others' key is then live.
            [requeued] = await queue.retry(failed)
            assert requeued == min(failed)
            assert await queue.retry(failed) == []
            assert await queue.retry_workflow("analysis") == 0
            # Once that one finished, the workflow's retry puts back the next, one per key.
            assert await queue.claim() is not None
            await queue.fail(requeued, "provider down again")
            assert await queue.retry_workflow("analysis") == 1
            [live] = await queue.by_status("queued")
            assert live.dedupe_key == KEY

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("key", "problem"),
    [("", "empty"), ("k" * 201, "at most 200 characters"), (42, "")],
)
def test_a_bad_dedupe_key_is_refused_naming_it(migrated: URL, key: object, problem: str) -> None:
    async def scenario() -> None:
        async with await connected(migrated) as db:
            queue = JobQueue(db)
            with pytest.raises(InvalidInput, match=rf"^dedupe_key: .*{re.escape(problem)}"):
                await queue.enqueue("analysis", dedupe_key=key)  # type: ignore[arg-type]
            with pytest.raises(InvalidInput, match=r"^dedupe_key: "):
                await queue.enqueue_many([NewJob("analysis", dedupe_key=key)])  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert sql(migrated, "SELECT count(*) FROM processing_jobs") == [(0,)]
