"""Running a compiled statement on a pooled connection, rows built straight into records."""

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncCursor

from media_db.errors import NotFound
from media_db.pool import Database

R = TypeVar("R")
Params = Mapping[str, Any] | Sequence[Any]
Build = Callable[[Sequence[Any]], R]
# PostgreSQL's DETAIL of a foreign key violation: Key (media_item_id)=(<uuid>) is not present...
MISSING_KEY = re.compile(r"\(media_item_id\)=\(([^)]*)\)")


def _rows_as(build: Build[R]) -> Callable[[AsyncCursor[Any]], Build[R]]:
    """A psycopg row factory whose rows are records: no dict or tuple in between."""
    return lambda _cursor: build


async def fetch_one(db: Database, statement: str, params: Params, build: Build[R]) -> R | None:
    async with db.connection() as connection:
        cursor = connection.cursor(row_factory=_rows_as(build))
        await cursor.execute(statement, params)
        return await cursor.fetchone()


async def fetch_all(db: Database, statement: str, params: Params, build: Build[R]) -> list[R]:
    async with db.connection() as connection:
        cursor = connection.cursor(row_factory=_rows_as(build))
        await cursor.execute(statement, params)
        return await cursor.fetchall()


Progress = Callable[[int], None]
# The most rows one list read returns (`limit` 1..MAX_PAGE): media pages, jobs by status.
MAX_PAGE = 500


async def delete_in_batches(
    db: Database, statement: str, params: Mapping[str, Any], progress: Progress | None = None
) -> int:
    """Runs a DELETE of at most params["batch"] rows until one deletes fewer: each batch its own
    short transaction, so no lock is held longer than one batch. Returns the rows deleted;
    `progress` hears the running total after each batch."""
    deleted = 0
    while True:
        async with db.connection() as connection:
            done = (await connection.execute(statement, params)).rowcount
        deleted += done
        if progress is not None:
            progress(deleted)
        if done < params["batch"]:
            return deleted


@contextmanager
def media_item_must_exist() -> Iterator[None]:
    """A write naming a media item that does not exist is NotFound. The foreign key decides,
    not a SELECT first, which a concurrent delete could make wrong; media_item_id is the only
    foreign key of our tables."""
    try:
        yield
    except psycopg.errors.ForeignKeyViolation as error:
        found = MISSING_KEY.search(error.diag.message_detail or "")
        which = f"media item {found[1]}" if found else "a media item it names"
        raise NotFound(f"media_item_id: {which} does not exist") from None
