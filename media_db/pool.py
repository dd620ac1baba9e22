"""The application's connection pool: psycopg_pool on psycopg 3.

Chosen over SQLAlchemy's async engine by measurement (`make bench`, row "pool checkout"): on
these machines a checkout plus one query costs about 4x more through the async engine's
greenlet bridge than through psycopg_pool, and the plan's workload is many small statements.
The SQL lives in the repositories; the models stay the source of truth for the schema.

min/max are psycopg_pool's own (the plan's 2 and 10 by default, POSTGRES_POOL_MIN/MAX). A
connection that sat idle in the pool is pinged before it is handed out and replaced if dead (a
server restart, an idle timeout); one used a moment ago is not, which saves a round trip on
every busy checkout. Each session carries application_name so operators of the shared database
can tell ours apart.
"""

import os
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import URL

from media_db import settings
from media_db.connect import CONNECT_TIMEOUT_SECONDS, DatabaseUnavailable, failure_message

DEFAULT_MIN, DEFAULT_MAX = 2, 10
PING_AFTER_IDLE_SECONDS = 2.0
Connection = psycopg.AsyncConnection[DictRow]


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


def conninfo(url: URL) -> str:
    """libpq connection string from a URL, every value quoted by psycopg (no formatting)."""
    return psycopg.conninfo.make_conninfo(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
        **{key: str(value) for key, value in url.query.items()},
    )


class _IdleCheck:
    """Pings a connection handed out again more than `ping_after_idle` seconds after it was
    last handed out. Timed from the checkout rather than the return: that costs no hook on the
    way back (the pool's `reset` callback routes returns through a worker: measured 30 % slower),
    and errs only towards an extra ping after a long-held connection."""

    def __init__(self, ping_after_idle: float) -> None:
        self.ping_after_idle = ping_after_idle
        self.handed_out_at: weakref.WeakKeyDictionary[Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    async def check(self, connection: Connection) -> None:
        now = time.monotonic()
        if now - self.handed_out_at.get(connection, 0.0) >= self.ping_after_idle:
            await AsyncConnectionPool.check_connection(connection)  # raises if dead: replaced
        self.handed_out_at[connection] = now


class Database:
    """The pool: `async with await Database.connect() as db: ...`, or `db = await
    Database.connect()` ... `await db.close()` (safe to call twice)."""

    def __init__(self, pool: AsyncConnectionPool[Connection], url: URL, size: PoolSize) -> None:
        self.pool = pool
        self.url = url
        self.size = size
        self.closed = False

    @classmethod
    async def connect(
        cls,
        url: URL | None = None,
        size: PoolSize | None = None,
        application_name: str = "",
        ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
    ) -> "Database":
        try:
            url = url or settings.database_url()
            size = size or PoolSize.from_environment()
        except settings.DatabaseNotConfigured as error:
            raise DatabaseUnavailable(str(error)) from None
        options: dict[str, Any] = {
            "application_name": application_name or settings.APPLICATION_NAME,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "row_factory": dict_row,
            # Every repository operation is one statement, atomic on its own: in autocommit it
            # costs one round trip instead of three (BEGIN, statement, COMMIT) and holds its
            # locks no longer than the statement. transaction() opens an explicit one.
            "autocommit": True,
        }
        # One direct attempt first: it fails with libpq's own reason (refused, bad password),
        # where a pool would only time out.
        try:
            probe = await psycopg.AsyncConnection.connect(conninfo(url), **options)
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(failure_message(url, error)) from None
        await probe.close()
        idle_check = _IdleCheck(ping_after_idle)
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo(url),
            min_size=size.min,
            max_size=size.max,
            kwargs=options,
            check=idle_check.check,
            name=options["application_name"],
            open=False,
        )
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        return cls(pool, url, size)

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection in autocommit: each statement is its own transaction."""
        if self.closed:
            raise RuntimeError("the pool is closed; open a new one with Database.connect()")
        return self.pool.connection()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """Several statements in one transaction: committed when the block ends, rolled back
        if it raises."""
        async with self.connection() as connection, connection.transaction():
            yield connection

    async def server_version(self) -> str:
        async with self.connection() as connection:
            row = await (await connection.execute("SHOW server_version")).fetchone()
            return str(row["server_version"]) if row else "unknown"

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
