"""Running a compiled statement on a pooled connection, rows built straight into records."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from psycopg import AsyncCursor

from media_db.pool import Database

R = TypeVar("R")
Params = Mapping[str, Any] | Sequence[Any]
Build = Callable[[Sequence[Any]], R]


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
