"""The repositories on real PostgreSQL: what each operation writes, returns and refuses."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db import NewAnalysis, NewMedia
from media_db.errors import InvalidTransition, NotFound
from media_db.models import AnalysisStatus, JobStatus
from media_db.pool import Database
from media_db.repositories import AnalysisRepository, JobQueue, MediaRepository


def scalar(url: URL, sql: str) -> object:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return connection.scalar(text(sql))


def test_media_round_trip_with_server_defaults(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            media = MediaRepository(db)
            made = await media.create(NewMedia("https://x/1.mp4", "youtube", width=1920))
            assert made.metadata == {}
            assert made.created_at is not None
            assert made.created_at.tzinfo is not None
            assert await media.get(made.id) == made
            assert await media.get(str(made.id)) == made
            assert await media.get(uuid.uuid4()) is None

            merged = await media.merge_metadata(made.id, {"title": "clip", "tags": ["a"]})
            merged = await media.merge_metadata(made.id, {"tags": ["b"]})
            assert merged.metadata == {"title": "clip", "tags": ["b"]}
            assert merged.updated_at is not None
            assert merged.updated_at > made.updated_at  # type: ignore[operator]
            with pytest.raises(NotFound):
                await media.merge_metadata(uuid.uuid4(), {"a": 1})

    asyncio.run(scenario())


# JSON that COPY's text format, JSON escaping and the NUL check must all leave as it is: quotes,
# backslashes (one spelling a NUL escape without being one), control characters, non-ASCII.
AWKWARD_JSON = {
    'quote\'s "double"': "back\\slash \\u0000 \\N \t tab\nnewline\r",
    "naïve ünïcode": ["日本語", "emoji 🎞", "\u2028", "\x7f"],
    "numbers": [0, -1, 0.1, 1e-7, 2**62],
    "nested": {"empty": {}, "list": [], "null": None, "true": True},
}


def test_awkward_json_round_trips_through_every_write_path(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            media = MediaRepository(db)
            made = await media.create(NewMedia("u", "s3", metadata=AWKWARD_JSON))
            assert made.metadata == AWKWARD_JSON
            await media.create_many([NewMedia("u", "bulk", metadata=AWKWARD_JSON)] * 3)
            bulk = [item.metadata for item in await media.by_source_type("bulk")]
            assert bulk == [AWKWARD_JSON] * 3
            merged = await media.merge_metadata(made.id, {"more": AWKWARD_JSON})
            assert merged.metadata == {**AWKWARD_JSON, "more": AWKWARD_JSON}
            analyses = AnalysisRepository(db)
            started = await analyses.start(made.id, "transcript", "openai")
            done = await analyses.complete(started.id, AWKWARD_JSON)
            assert done.result_data == AWKWARD_JSON
            # The input's form: every column a caller may set, generated from the model.
            again = await analyses.start(NewAnalysis("labels", "google", media_item_id=made.id))
            assert (again.analysis_type, again.provider) == ("labels", "google")
            assert again.status == AnalysisStatus.PROCESSING

    asyncio.run(scenario())


def test_newest_first_keyset_pages_cover_everything_once(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            media = MediaRepository(db)
            await media.create_many([NewMedia(f"u{i}", "s3") for i in range(25)])
            seen, cursor, pages = [], None, 0
            while True:
                page = await media.newest(limit=10, after=cursor)
                seen += page.items
                pages += 1
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert pages == 3
            assert len({item.id for item in seen}) == 25
            keys = [(item.created_at, item.id) for item in seen]
            assert keys == sorted(keys, reverse=True)
            assert {m.source_type for m in await media.by_source_type("s3")} == {"s3"}
            assert await media.by_source_type("none") == []

    asyncio.run(scenario())


def test_delete_takes_results_and_jobs_with_it(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            media, analyses, jobs = MediaRepository(db), AnalysisRepository(db), JobQueue(db)
            item = await media.create(NewMedia("u", "s3"))
            await analyses.start(item.id, "transcript", "openai")
            await jobs.enqueue("transcode", media_item_id=item.id)
            await media.delete(item.id)
            with pytest.raises(NotFound, match=f"media item {item.id} does not exist"):
                await media.delete(item.id)  # a change of a missing row raises

    asyncio.run(scenario())
    assert scalar(migrated, "SELECT count(*) FROM analysis_results") == 0
    assert scalar(migrated, "SELECT count(*) FROM processing_jobs") == 0


def test_analysis_lifecycle_and_latest_per_type_and_provider(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            item = await MediaRepository(db).create(NewMedia("u", "s3"))
            analyses = AnalysisRepository(db)
            old = await analyses.start(item.id, "transcript", "openai")
            assert old.status is AnalysisStatus.PROCESSING
            done = await analyses.complete(
                old.id, {"text": "hi"}, token_usage=12, processing_time_ms=340
            )
            assert (done.status, done.result_data, done.token_usage) == (
                AnalysisStatus.COMPLETED,
                {"text": "hi"},
                12,
            )
            assert done.completed_at is not None
            with pytest.raises(InvalidTransition, match="is completed"):
                await analyses.fail(old.id, "late")
            with pytest.raises(NotFound):
                await analyses.fail(uuid.uuid4(), "nope")
            new = await analyses.start(item.id, "transcript", "openai")
            failed = await analyses.fail(new.id, "quota exceeded")
            other = await analyses.start(item.id, "labels", "google")

            assert [r.id for r in await analyses.for_media_item(item.id)] == [
                other.id,
                new.id,
                old.id,
            ]
            latest = await analyses.latest_per_type_and_provider(item.id)
            assert {(r.analysis_type, r.provider): r.id for r in latest} == {
                ("labels", "google"): other.id,
                ("transcript", "openai"): failed.id,
            }

    asyncio.run(scenario())


def test_job_lifecycle_transitions_and_stuck_requeue(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            jobs = JobQueue(db)
            low = await jobs.enqueue("transcode", priority=1)
            high = await jobs.enqueue("transcode", priority=9)
            other = await jobs.enqueue("thumbnail", priority=9)
            assert low.status is JobStatus.QUEUED

            claimed = await jobs.claim("transcode")
            assert claimed is not None
            assert claimed.id == high.id
            assert claimed.status is JobStatus.RUNNING
            assert claimed.started_at is not None
            with pytest.raises(InvalidTransition, match="is queued, not running"):
                await jobs.complete(low.id)
            with pytest.raises(NotFound):
                await jobs.complete(uuid.uuid4())
            assert (await jobs.complete(high.id)).status is JobStatus.COMPLETED
            with pytest.raises(InvalidTransition, match="is completed"):
                await jobs.complete(high.id)

            assert (await jobs.cancel(other.id)).status is JobStatus.CANCELLED
            running = await jobs.claim(lease=timedelta(milliseconds=300))
            assert running is not None
            assert running.id == low.id
            assert running.locked_until is not None
            assert await jobs.claim() is None
            assert await jobs.requeue_stuck(timedelta(hours=1)) == []
            # Its lease still holds: a live worker's job is never taken, however old.
            assert await jobs.requeue_stuck(timedelta(microseconds=1)) == []
            while datetime.now(UTC) <= running.locked_until:
                await asyncio.sleep(0.05)
            assert await jobs.requeue_stuck(timedelta(microseconds=1)) == [low.id]
            failed = await jobs.fail((await jobs.claim()).id, "ffmpeg exited 1")  # type: ignore[union-attr]
            assert failed.error_message == "ffmpeg exited 1"
            assert await jobs.counts() == {
                JobStatus.QUEUED: 0,
                JobStatus.RUNNING: 0,
                JobStatus.COMPLETED: 1,
                JobStatus.FAILED: 1,
                JobStatus.CANCELLED: 1,
            }
            assert [j.id for j in await jobs.by_status("failed")] == [low.id]

    asyncio.run(scenario())
