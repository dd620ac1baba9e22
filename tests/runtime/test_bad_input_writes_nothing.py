"""Bad input gets an exception naming the field, raised before anything is written; a multi-row
operation that fails part-way writes nothing at all."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    URL,
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    create_engine,
    pool,
    text,
)

from media_db import NewAnalysis, NewJob, NewMedia, validation
from media_db.errors import InvalidInput, NotFound
from media_db.models import MediaItem
from media_db.pool import Database
from media_db.repositories import AnalysisRepository, JobQueue, MediaRepository
from media_db.statements import bounds, table_of
from media_db.validation import Bounds

Call = Callable[[Database], Awaitable[object]]


INT_KEY: dict[Any, Any] = {1: "a", "1": "b"}  # typed loosely: a caller's untyped dict


class ShortStr(str):
    """A str that says it is one character long."""

    __slots__ = ()

    def __len__(self) -> int:
        return 1


def create(db: Database, **fields: Any) -> Awaitable[object]:
    return MediaRepository(db).create(NewMedia("u", "s3", **fields))


def complete(db: Database, **fields: Any) -> Awaitable[object]:
    return AnalysisRepository(db).complete(uuid.uuid4(), {}, **fields)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


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
    (
        "no media item",
        "media_item_id",
        lambda db: AnalysisRepository(db).start(NewAnalysis("transcript", "openai")),
    ),
    (
        "no provider",
        "provider",
        lambda db: AnalysisRepository(db).start(uuid.uuid4(), "transcript"),
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
    # Integer columns: whole numbers within the column type's range (int 32-bit, bigint 64-bit).
    ("fractional", "width", lambda db: create(db, width=1.5)),
    ("fractional", "width", lambda db: create(db, width=1.4)),
    ("fractional", "height", lambda db: create(db, height=1080.7)),
    ("fractional", "file_size", lambda db: create(db, file_size=10.9)),
    ("whole but a float", "width", lambda db: create(db, width=2.0)),
    ("CHECK width > 0", "width", lambda db: create(db, width=1e-9)),
    ("int range", "width", lambda db: create(db, width=2**31)),
    ("int range", "height", lambda db: create(db, height=-(2**31) - 1)),
    ("bigint range", "file_size", lambda db: create(db, file_size=2**70)),
    ("bool", "width", lambda db: create(db, width=True)),
    ("double range", "duration_seconds", lambda db: create(db, duration_seconds=10**400)),
    ("int range", "priority", lambda db: JobQueue(db).enqueue("transcode", priority=2**31)),
    ("int range", "token_usage", lambda db: complete(db, token_usage=2**40)),
    ("fractional", "processing_time_ms", lambda db: complete(db, processing_time_ms=2.5)),
    # Page sizes.
    ("negative limit", "limit", lambda db: JobQueue(db).by_status("queued", limit=-1)),
    ("limit not a number", "limit", lambda db: JobQueue(db).by_status("queued", limit="ten")),  # type: ignore[arg-type]
    ("negative limit", "limit", lambda db: MediaRepository(db).by_source_type("s3", limit=-1)),
    ("limit not a number", "limit", lambda db: MediaRepository(db).by_source_type("s3", "ten")),  # type: ignore[arg-type]
    # Text PostgreSQL cannot store: NUL, and lone surrogates (not encodable as UTF-8).
    ("NUL", "source_url", lambda db: MediaRepository(db).create(NewMedia("u\x00v", "s3"))),
    ("surrogate", "source_type", lambda db: MediaRepository(db).create(NewMedia("u", "s\udcff3"))),
    (
        "NUL",
        "mime_type",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", mime_type="a\x00")),
    ),
    (
        "NUL",
        "metadata",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", metadata={"k": "a\x00"})),
    ),
    (
        "NUL in a key",
        "metadata",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", metadata={"k\x00": 1})),
    ),
    (
        # JSON would make both "1": one value silently lost
        "a key that is not a string",
        "metadata",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", metadata=INT_KEY)),
    ),
    (
        "a str whose __len__ lies",
        "mime_type",
        lambda db: MediaRepository(db).create(NewMedia("u", "s3", mime_type=ShortStr("a" * 200))),
    ),
    (
        "surrogate",
        "metadata",
        lambda db: MediaRepository(db).merge_metadata(uuid.uuid4(), {"k": ["\ud800"]}),
    ),
    (
        "NUL",
        "result_data",
        lambda db: AnalysisRepository(db).complete(uuid.uuid4(), {"t": "a\x00b"}),
    ),
    (
        "nested past the encoder's depth",
        "result_data",
        lambda db: AnalysisRepository(db).complete(uuid.uuid4(), nested(5_000)),
    ),
    ("NUL", "workflow_type", lambda db: JobQueue(db).enqueue("trans\x00code")),
    ("NUL", "workflow_type", lambda db: JobQueue(db).claim("trans\x00code")),
    ("surrogate", "source_type", lambda db: MediaRepository(db).by_source_type("\udcff")),
    ("NUL", "provider", lambda db: AnalysisRepository(db).start(uuid.uuid4(), "t", "open\x00ai")),
]


def row_counts(url: URL) -> tuple[int, ...]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return tuple(
            int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in ("media_items", "analysis_results", "processing_jobs")
        )


def test_each_bad_input_names_its_field_and_writes_nothing(migrated: URL) -> None:
    before = row_counts(migrated)

    async def outcome(db: Database, field: str, call: Call) -> str | None:
        """None when the call raised InvalidInput for `field`, else what happened instead."""
        try:
            await call(db)
        except InvalidInput as error:
            return (
                None
                if error.field == field and str(error).startswith(f"{field}: ")
                else repr(error)
            )
        except Exception as error:  # anything else is the failure to report
            return repr(error)
        return "no error"

    async def scenario() -> list[str]:
        async with await Database.connect(migrated) as db:
            return [
                f"{label} ({field}): {wrong}"
                for label, field, call in CASES
                if (wrong := await outcome(db, field, call)) is not None
            ]

    wrong = asyncio.run(scenario())
    assert not wrong, "\n".join(wrong)
    assert row_counts(migrated) == before


def test_bulk_insert_with_one_bad_item_writes_none(migrated: URL) -> None:
    good = [NewMedia(f"u{i}", "s3") for i in range(1000)]

    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            media = MediaRepository(db)
            with pytest.raises(InvalidInput, match=r"^width: .*\(item 1000 of the batch\)$"):
                await media.create_many([*good, NewMedia("u", "s3", width=-3)])
            with pytest.raises(InvalidInput, match=r"^priority: .*\(item 2 of the batch\)$"):
                await JobQueue(db).enqueue_many(
                    [NewJob("a"), NewJob("b"), NewJob("c", priority=-1)]
                )
            # Just past the model's limit (the type's, or a user's CHECK narrowing it).
            largest = bounds(table_of(MediaItem).c.file_size).high
            assert isinstance(largest, int)
            with pytest.raises(InvalidInput, match=rf"^file_size: .* {largest}\b"):
                await media.create_many([*good, NewMedia("u", "s3", file_size=largest + 1)])
            # Passes our checks, fails in the database on the last row (no such media item):
            jobs = [NewJob("transcode") for _ in range(1000)]
            missing = uuid.uuid4()
            with pytest.raises(NotFound, match=f"^media_item_id: media item {missing} "):
                await JobQueue(db).enqueue_many(
                    [*jobs, NewJob("transcode", priority=5, media_item_id=missing)]
                )

    asyncio.run(scenario())
    assert row_counts(migrated) == (0, 0, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda db, key: AnalysisRepository(db).start(key, "transcript", "openai"),
        lambda db, key: JobQueue(db).enqueue("transcode", media_item_id=key),
    ],
    ids=["AnalysisRepository.start", "JobQueue.enqueue"],
)
def test_a_media_item_that_does_not_exist_is_not_found(
    migrated: URL, call: Callable[[Database, uuid.UUID], Awaitable[object]]
) -> None:
    missing = uuid.uuid4()

    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            with pytest.raises(NotFound, match=f"^media_item_id: media item {missing} does not"):
                await call(db, missing)

    asyncio.run(scenario())
    assert row_counts(migrated) == (0, 0, 0)


def test_error_messages_the_database_cannot_store_are_kept_with_the_character_replaced(
    migrated: URL,
) -> None:
    """A handler's exception text is not the caller's to choose: refusing it would leave the job
    running, so a NUL or a lone surrogate in an error message becomes U+FFFD instead."""

    async def scenario() -> list[str]:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue_many([NewJob("transcode") for _ in range(3)])
            first, second, third = await queue.claim_many(3)
            failed = await queue.fail_many({first.id: "bad\x00byte", second.id: "lone \udcff"})
            alone = await queue.fail(third.id, "nul\x00")
            return sorted(job.error_message or "" for job in [*failed, alone])

    assert asyncio.run(scenario()) == ["bad\ufffdbyte", "lone \ufffd", "nul\ufffd"]


def test_numeric_limits_come_from_the_column_type_and_its_checks() -> None:
    """A model's column type and simple CHECKs are the limits: changing the model changes them."""
    table = Table(
        "limits",
        MetaData(),
        Column("small", SmallInteger),
        Column("big", BigInteger),
        Column("ratio", Double),
        CheckConstraint("small > 5"),
        CheckConstraint("small <= 99.5"),
        CheckConstraint("ratio < 1"),
        CheckConstraint("big >= 0 OR big IS NULL"),  # not a simple bound: the server's to check
    )
    assert bounds(table.c.small) == Bounds(whole=True, low=6, high=99)
    assert bounds(table.c.big) == Bounds(whole=True, low=-(2**63), high=2**63 - 1)
    assert bounds(table.c.ratio) == Bounds(whole=False, high=1.0, high_open=True)
    assert str(bounds(table.c.ratio)) == "a finite number < 1"


def test_a_numeric_column_takes_a_finite_decimal_within_its_precision() -> None:
    """NUMERIC(p, s) holds under 10^(p - s) once rounded to s places, as the server rounds; a
    Decimal NaN or infinity, which PostgreSQL's NUMERIC would store and every CHECK would let
    through, is refused before the server, and so is what no NUMERIC holds."""
    table = Table(
        "amounts",
        MetaData(),
        Column("amount", Numeric(6, 2)),
        Column("any_size", Numeric),
        CheckConstraint("amount >= 0"),
    )
    amount = bounds(table.c.amount)
    assert amount == Bounds(whole=False, low=0, high=10**4, high_open=True, decimal=True, scale=2)
    any_size = bounds(table.c.any_size)
    assert any_size == Bounds(whole=False, decimal=True)
    for fits in (Decimal("9999.99"), Decimal("9999.994"), Decimal("-0.004"), 12, 0.5):
        assert validation.number("amount", fits, amount) == fits  # as given: the server rounds
    for bad in (
        Decimal("10000"),
        Decimal("9999.995"),  # 10000.00 once rounded
        9999.999,
        Decimal("-0.005"),  # -0.01
        Decimal("NaN"),
        Decimal("-Infinity"),
        Decimal("1e200000"),  # no NUMERIC holds it (and no Decimal context rounds it)
        True,
        "1",
    ):
        with pytest.raises(InvalidInput, match="amount"):
            validation.number("amount", bad, amount)
    assert validation.number("any_size", Decimal("1e131071"), any_size) == Decimal("1e131071")
    for bad in (Decimal("1e131072"), Decimal("1e-16384"), Decimal("sNaN"), float("inf")):
        with pytest.raises(InvalidInput, match="any_size"):
            validation.number("any_size", bad, any_size)
