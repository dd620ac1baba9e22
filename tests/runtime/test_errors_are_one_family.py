"""Every error the data layer raises on purpose is a MediaDbError, importable from `media_db`,
and nothing of the driver's reaches the caller for a lost connection: a backend terminated in
the middle of a statement surfaces as DatabaseUnavailable, the worker's bad arguments as
InvalidInput."""

import asyncio
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import URL, create_engine, pool, text

import media_db
from media_db import (
    Database,
    DatabaseNotConfigured,
    DatabaseUnavailable,
    InvalidInput,
    InvalidTransition,
    MediaDbError,
    NotFound,
    PoolSize,
    run_worker,
)
from media_db.records import JobRecord

APPLICATION = "media-analysis-errors-test"
SLEEP = "SELECT pg_sleep(60)"


def test_every_error_of_ours_is_a_media_db_error_and_keeps_its_builtin_base() -> None:
    ours = {name for name in media_db.__all__ if isinstance(getattr(media_db, name), type)}
    # A handler's request to the worker, not an error: a handler's `except MediaDbError` must
    # not swallow it.
    signals = {"RetryAfter"}
    assert not any(issubclass(getattr(media_db, name), MediaDbError) for name in signals)
    errors = {name for name in ours if issubclass(getattr(media_db, name), BaseException)}
    assert errors - signals == {
        "MediaDbError",
        "InvalidInput",
        "NotFound",
        "InvalidTransition",
        "DatabaseUnavailable",
        "DatabaseNotConfigured",
        "PermissionDenied",
    }
    for name in errors - signals:
        assert issubclass(getattr(media_db, name), MediaDbError), name
    assert issubclass(InvalidInput, ValueError)
    assert issubclass(NotFound, LookupError)
    assert issubclass(InvalidTransition, RuntimeError)
    assert issubclass(DatabaseUnavailable, RuntimeError)
    assert issubclass(DatabaseNotConfigured, RuntimeError)
    assert issubclass(media_db.PermissionDenied, PermissionError)


def terminate_when_seen(url: URL) -> int:
    """Wait until our sleeping statement runs, then terminate its backend (returns its pid)."""
    with create_engine(url, poolclass=pool.NullPool).connect() as admin:
        for _ in range(600):  # a condition, polled: up to 60 s on a loaded machine
            pid = admin.scalar(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :app "
                    "AND query = :query AND state = 'active'"
                ),
                {"app": APPLICATION, "query": SLEEP},
            )
            if pid is not None:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                return int(pid)
            admin.rollback()
            admin.execute(text("SELECT pg_sleep(0.1)"))
    raise AssertionError("the statement never started")


def test_a_backend_terminated_mid_statement_is_database_unavailable(migrated: URL) -> None:
    async def scenario() -> BaseException:
        async with await Database.connect(
            migrated, PoolSize(1, 2), application_name=APPLICATION
        ) as db:

            async def sleep() -> None:
                async with db.connection() as connection:
                    await connection.execute(SLEEP)

            task = asyncio.ensure_future(sleep())
            await asyncio.to_thread(terminate_when_seen, migrated)
            with pytest.raises(DatabaseUnavailable) as raised:
                await task
            # The pool replaced the dead connection: the next request just works.
            assert await db.server_version()
            return raised.value

    error = asyncio.run(scenario())
    assert "lost the connection" in str(error)
    assert "\n" not in str(error)
    assert isinstance(error.__cause__, psycopg.OperationalError)
    assert migrated.password is None or migrated.password not in str(error)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("concurrency", 0),
        ("concurrency", True),
        ("poll_interval", 0),
        ("poll_interval", -1.0),
        ("max_outage", timedelta(0)),
        ("max_outage", 30),  # seconds, not a timedelta
    ],
)
def test_run_worker_refuses_bad_arguments_as_invalid_input(
    migrated: URL, argument: str, value: object
) -> None:
    async def handler(job: JobRecord) -> None:
        raise AssertionError("no job should run")

    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 2)) as db:
            with pytest.raises(InvalidInput, match=argument):
                await run_worker(db, handler, until_empty=True, **{argument: value})  # type: ignore[arg-type]

    asyncio.run(scenario())
