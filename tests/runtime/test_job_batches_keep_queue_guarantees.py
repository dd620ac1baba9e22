"""Batch operations keep the single ones' guarantees: claim_many takes each job once, in claim
order, in one statement; complete_many / fail_many touch only jobs still running; enqueue_many
writes all or nothing; bad input is refused before anything is written."""

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import URL

from media_db import Database, InvalidInput, JobQueue, JobStatus, NewJob
from tests.helpers import job_counts


def test_claim_many_takes_each_job_once_in_claim_order(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            assert (
                await queue.enqueue_many(
                    [NewJob("transcode", priority=i % 10) for i in range(300)]
                    + [NewJob("thumbnail", priority=9) for _ in range(20)]
                )
                == 320
            )
            only = await queue.claim_many(50, "thumbnail")
            assert {job.workflow_type for job in only} == {"thumbnail"}
            assert len(only) == 20

            async def claimer() -> list[uuid.UUID]:
                got = []
                while batch := await queue.claim_many(7):
                    order = [(-(job.priority or 0), job.created_at) for job in batch]
                    assert order == sorted(order), "a batch came back out of claim order"
                    assert {job.status for job in batch} == {JobStatus.RUNNING}
                    got += [job.id for job in batch]
                return got

            per_claimer = await asyncio.gather(*(claimer() for _ in range(6)))
            claims = Counter(key for got in per_claimer for key in got)
            assert len(claims) == 300
            assert set(claims.values()) == {1}
            assert await queue.claim_many(10) == []

    asyncio.run(scenario())
    assert job_counts(migrated) == {JobStatus.RUNNING: 320}


def test_complete_and_fail_many_touch_only_running_jobs(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue_many([NewJob("transcode") for _ in range(6)])
            a, b, c, d, e, f = await queue.claim_many(6)
            await queue.cancel(c.id)
            done = await queue.complete_many([a.id, str(b.id), c.id, uuid.uuid4()])
            assert {job.id for job in done} == {a.id, b.id}
            assert {job.status for job in done} == {JobStatus.COMPLETED}
            assert await queue.complete_many([a.id]) == []  # a retry marks nothing twice
            failed = await queue.fail_many({d.id: "ffmpeg exited 1", e.id: "timeout"})
            assert {job.id: job.error_message for job in failed} == {
                d.id: "ffmpeg exited 1",
                e.id: "timeout",
            }
            assert await queue.release([f.id, a.id]) == [f.id]
            assert await queue.complete_many([]) == []

    asyncio.run(scenario())
    assert job_counts(migrated) == {"completed": 2, "cancelled": 1, "failed": 2, "queued": 1}


@pytest.mark.parametrize(
    ("field", "call"),
    [
        ("n", lambda q: q.claim_many(0)),
        ("n", lambda q: q.claim_many(10_001)),
        ("workflow_type", lambda q: q.claim_many(5, "x" * 51)),
        ("job_ids", lambda q: q.complete_many(["not-a-uuid"])),
        ("job_ids", lambda q: q.complete_many(str(uuid.uuid4()))),
        ("error_message", lambda q: q.fail_many({uuid.uuid4(): " "})),
        ("job_ids", lambda q: q.release([uuid.uuid4(), "x"])),
        ("priority", lambda q: q.enqueue_many([NewJob("a"), NewJob("b", priority=-1)])),
        ("workflow_type", lambda q: q.enqueue_many([NewJob("a"), NewJob("y" * 51)])),
        ("media_item_id", lambda q: q.enqueue_many([NewJob("a", media_item_id="zz")])),
    ],
)
def test_bad_batch_input_names_its_field_and_writes_nothing(
    migrated: URL, field: str, call: object
) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated, application_name="bad-batch") as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode")
            running = await queue.claim()
            assert running is not None
            with pytest.raises(InvalidInput, match=f"^{field}: "):
                await call(queue)  # type: ignore[operator]

    asyncio.run(scenario())
    assert job_counts(migrated) == {JobStatus.RUNNING: 1}
