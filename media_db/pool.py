"""The application's connection pool: one async SQLAlchemy engine on psycopg 3.

min/max: SQLAlchemy's QueuePool has a maximum (pool_size, no overflow) but no minimum, so `open`
warms `min_size` connections up front; they stay pooled. Every checkout is pre-pinged, so a
connection killed by a restart or an idle timeout is replaced instead of failing a request.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sqlalchemy import URL, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from media_db import settings
from media_db.connect import CONNECT_TIMEOUT_SECONDS, DatabaseUnavailable, failure_message

DEFAULT_MIN, DEFAULT_MAX = 2, 10


@dataclass(frozen=True)
class PoolSize:
    min: int
    max: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "PoolSize":
        size = cls(
            _count(environ, "POSTGRES_POOL_MIN", DEFAULT_MIN),
            _count(environ, "POSTGRES_POOL_MAX", DEFAULT_MAX),
        )
        if size.max < 1 or size.min > size.max:
            raise settings.DatabaseNotConfigured(
                f"pool size must satisfy 0 <= POSTGRES_POOL_MIN <= POSTGRES_POOL_MAX and "
                f"POSTGRES_POOL_MAX >= 1; got min={size.min}, max={size.max}"
            )
        return size


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise settings.DatabaseNotConfigured(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


class Database:
    """The pool: `async with await Database.connect() as db: ...`, or `db = await
    Database.connect()` ... `await db.close()` (safe to call twice)."""

    def __init__(self, engine: AsyncEngine, size: PoolSize) -> None:
        self.engine = engine
        self.size = size
        self.closed = False

    @classmethod
    async def connect(
        cls, url: URL | None = None, size: PoolSize | None = None, application_name: str = ""
    ) -> "Database":
        try:
            url = url or settings.database_url()
            size = size or PoolSize.from_environment()
        except settings.DatabaseNotConfigured as error:
            raise DatabaseUnavailable(str(error)) from None
        engine = create_async_engine(
            url,
            pool_size=size.max,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={
                "application_name": application_name or settings.APPLICATION_NAME,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            },
        )
        database = cls(engine, size)
        try:
            await database._warm()
        except OperationalError as error:
            await engine.dispose()
            raise DatabaseUnavailable(failure_message(url, error.orig)) from None
        return database

    async def _warm(self) -> None:
        held = [await self.engine.connect() for _ in range(max(self.size.min, 1))]
        await asyncio.gather(*(connection.close() for connection in held))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        if self.closed:
            raise RuntimeError(
                "the database pool is closed; open a new one with Database.connect()"
            )
        async with self.engine.begin() as connection:
            yield connection

    async def server_version(self) -> str:
        async with self.transaction() as connection:
            return str(await connection.scalar(text("SHOW server_version")))

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
