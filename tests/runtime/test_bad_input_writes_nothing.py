"""Bad input gets an exception naming the field, raised before anything is written; a multi-row
operation that fails part-way writes nothing at all."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db.errors import InvalidInput
from media_db.pool import Database
from media_db.repositories import AnalysisRepository, JobQueue, MediaRepository
from media_db.repositories.media import NewMedia

Call = Callable[[Database], Awaitable[object]]

CASES: list[tuple[str, str, Call]] = [
    ("malformed id", "media_id", lambda db: MediaRepository(db).get("not-a-uuid")),
    ("malformed id", "media_id", lambda db: MediaRepository(db).delete("1234")),
    ("malformed id", "job_id", lambda db: JobQueue(db).complete("x")),
    ("malformed id", "result_id", lambda db: AnalysisRepository(db).fail("x", "boom")),
    (
        "malformed id",
        "media_item_id",
        lambda db: AnalysisRepository(db).start("zz", "transcript", "openai"),
    ),
    ("unknown status", "status", lambda db: JobQueue(db).by_status("done")),
    (
        "negative size",
        "file_size",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", file_size=-1)),
    ),
    (
        "negative duration",
        "duration_seconds",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", duration_seconds=-0.5)),
    ),
    (
        "not a number",
        "duration_seconds",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", duration_seconds=float("nan"))),
    ),
    ("zero width", "width", lambda db: MediaRepository(db).create(NewMedia("u", "s3", width=0))),
    ("negative priority", "priority", lambda db: JobQueue(db).enqueue("transcode", priority=-1)),
    ("fractional priority", "priority", lambda db: JobQueue(db).enqueue("transcode", priority=1.5)),  # type: ignore[arg-type]
    ("too long", "source_type", lambda db: MediaRepository(db).create(NewMedia("u", "x" * 51))),
    ("empty", "workflow_type", lambda db: JobQueue(db).enqueue(" ")),
    (
        "not JSON",
        "metadata",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", metadata={"n": Decimal(1)})),
    ),
    ("not JSON", "metadata", lambda db: MediaRepository(db).merge_metadata(uuid.uuid4(), [1])),  # type: ignore[arg-type]
    (
        "not JSON",
        "result_data",
        lambda db: AnalysisRepository(db).complete(uuid.uuid4(), {"when": object()}),
    ),
    (
        "negative tokens",
        "token_usage",
        lambda db: AnalysisRepository(db).complete(uuid.uuid4(), {}, token_usage=-5),
    ),
    ("bad age", "older_than", lambda db: JobQueue(db).requeue_stuck(timedelta(0))),
    ("page size", "limit", lambda db: MediaRepository(db).newest(limit=0)),
]


def row_counts(url: URL) -> tuple[int, ...]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return tuple(
            int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("media_items", "analysis_results", "processing_jobs")
        )


def test_each_bad_input_names_its_field_and_writes_nothing(migrated: URL) -> None:
    before = row_counts(migrated)

    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            for label, field, call in CASES:
                with pytest.raises(InvalidInput, match=f"^{field}: ") as raised:
                    await call(db)
                assert raised.value.field == field, label

    asyncio.run(scenario())
    assert row_counts(migrated) == before


def test_bulk_insert_with_one_bad_item_writes_none(migrated: URL) -> None:
    good = [NewMedia(f"u{i}", "s3") for i in range(1000)]

    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            media = MediaRepository(db)
            with pytest.raises(InvalidInput, match=r"^width: "):
                await media.create_many([*good, NewMedia("u", "s3", width=-3)])
            # Passes our checks, fails in the database on the last row (bigint overflow):
            with pytest.raises(psycopg.errors.NumericValueOutOfRange, match="line 1001"):
                await media.create_many([*good, NewMedia("u", "s3", file_size=2**63)])

    asyncio.run(scenario())
    assert row_counts(migrated) == (0, 0, 0)
