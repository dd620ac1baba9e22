"""The application's connection pool: psycopg_pool on psycopg 3.

Chosen over SQLAlchemy's async engine by measurement (`make bench`, row "pool checkout"): on
these machines a checkout plus one query costs about 4x more through the async engine's
greenlet bridge than through psycopg_pool, and the plan's workload is many small statements.
The SQL lives in the repositories; the models stay the source of truth for the schema.

min/max are psycopg_pool's own (the plan's 2 and 10 by default, POSTGRES_POOL_MIN/MAX). A
pooled connection is pinged before it is handed out when it sat idle for 2 s or more, or when
the server has written to it while idle (a terminated backend, a restart: seen without a round
trip), and replaced if dead; a busy one costs no extra round trip. After a restart a request
succeeds as soon as the server takes connections again, and while it does not, fails at once
with DatabaseUnavailable (tests/runtime/test_pool_recovers_from_restarts.py). Each session carries
application_name so operators of the shared database can tell ours apart.
"""

import asyncio
import logging
import os
import select
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import DictRow, dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import URL

from media_db import intermediary, settings
from media_db.connect import CONNECT_TIMEOUT_SECONDS, DatabaseUnavailable, failure_message
from media_db.errors import PermissionDenied

DEFAULT_MIN, DEFAULT_MAX = 2, 10
PING_AFTER_IDLE_SECONDS = 2.0
# A request waits this long for a pooled connection before checking that the server is up.
FIRST_WAIT_SECONDS = 1.0
PROBE_EVERY_SECONDS = 1.0
Connection = psycopg.AsyncConnection[DictRow]

log = logging.getLogger(__name__)


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
    if not (raw.isascii() and raw.isdigit()):  # isdigit() alone takes ² and other scripts' digits
        raise settings.DatabaseNotConfigured(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def conninfo(url: URL) -> str:
    """libpq connection string from a URL, every value quoted by psycopg (no formatting). A
    query parameter naming a part the URL also has (libpq takes `?password=`) yields to it."""
    parts: dict[str, str | int | None] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    query: dict[str, str | int | None] = {key: str(value) for key, value in url.query.items()}
    if isinstance(hosts := url.query.get("host"), tuple):  # several: libpq's comma lists
        pairs = [settings.host_and_port(host) for host in hosts]
        query["host"] = ",".join(name for name, _ in pairs)
        if any(port for _, port in pairs):  # else a ?port= of the URL's own stands
            query["port"] = ",".join(port for _, port in pairs)
    given = {key: value for key, value in parts.items() if value is not None}
    return psycopg.conninfo.make_conninfo("", **{**query, **given})


class _PooledConnection(psycopg.AsyncConnection[DictRow]):
    # When it was last handed out: a connection idle longer than PING_AFTER_IDLE is pinged.
    handed_out_at = 0.0


def _has_news(connection: Connection) -> bool:
    """Has the server sent something to this idle connection? In autocommit, between
    statements, that is a termination notice (a terminated backend, a restart) or the end of the
    stream: found without a round trip. (Rarely a NOTIFY: then the ping just succeeds.)"""
    poller = select.poll()  # poll, not select(): no limit on the descriptor's number
    poller.register(connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _MostRecentlyUsedPool(AsyncConnectionPool[_PooledConnection]):
    """Hands out the connection returned last. psycopg_pool's own order is first-in, first-out:
    consecutive requests rotate over every open backend, each with colder caches and its
    statements prepared later (bench row "claim_many(100)": 0.89x raw psycopg with 10 open,
    0.97x on one). Most recently used keeps a quiet stretch on one hot backend, and the
    least recently used stays first in line for psycopg_pool's max_idle shrink."""

    async def _get_ready_connection(self, timeout: float | None) -> _PooledConnection | None:
        # Called under the pool's lock; the parent takes the first: make it the newest.
        self._pool.rotate(1)
        return await super()._get_ready_connection(timeout)


class _Checkout:
    """`async with db.connection() as connection`: a class rather than a generator-based
    context manager, and getconn/putconn rather than the pool's own connection() (which adds
    its own `async with connection`): measured cheaper per call (bench row "pool checkout")."""

    __slots__ = ("connection", "database")
    connection: _PooledConnection

    def __init__(self, database: "Database") -> None:
        self.database = database

    async def __aenter__(self) -> Connection:
        self.connection = await self.database.getconn()
        return self.connection

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        role = self.connection.info.user
        # psycopg_pool rolls back anything left open and replaces a broken connection.
        await self.database.pool.putconn(self.connection)
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            refused = " ".join(str(error).split())
            raise PermissionDenied(f"{refused} (role {role})", role) from error
        if isinstance(error, psycopg.OperationalError) and _connection_lost(self.connection, error):
            raise DatabaseUnavailable(
                f"lost the connection to {settings.redacted(self.database.url)} mid-statement "
                f"({' '.join(str(error).split())}); try again"
            ) from error


def _connection_lost(connection: Connection, error: psycopg.OperationalError) -> bool:
    """The server went away (terminated, restarted, unreachable), as opposed to a statement
    refused on a live connection (a lock or statement timeout, also OperationalErrors)."""
    return connection.broken or error.sqlstate is None or error.sqlstate.startswith(("08", "57P"))


class Database:
    """The pool: `async with await Database.connect() as db: ...`, or `db = await
    Database.connect()` ... `await db.close()` (safe to call twice)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[_PooledConnection],
        url: URL,
        size: PoolSize,
        options: Mapping[str, Any],
        ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
        listen_url: URL | None = None,
    ) -> None:
        self.pool = pool
        self.options = options
        self.url = url
        # Where LISTEN goes (a session of its own); None: nowhere, the workers poll.
        self.listen_url = listen_url
        self.size = size
        self.ping_after_idle = ping_after_idle
        self.closed = False
        self._probe: asyncio.Task[None] | None = None
        self._probed_at = -PROBE_EVERY_SECONDS

    @classmethod
    async def connect(
        cls,
        url: URL | None = None,
        size: PoolSize | None = None,
        application_name: str = "",
        ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
        pooler: str | None = None,
        direct_url: URL | None = None,
    ) -> "Database":
        """`url`, `pooler` and `direct_url` default to the environment's DATABASE_URL,
        POSTGRES_POOLER and DIRECT_DATABASE_URL (media_db/settings.py)."""
        try:
            if url is None:
                url = settings.database_url()
                pooler = settings.pooler()
                direct_url = settings.direct_url() if settings.has_direct_url() else None
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
        found = await _first_contact(url, options)
        if pooler is None and found is not None:
            # Undeclared, it may be a transaction pooler: the safe side, said once.
            log.warning(
                "DATABASE_URL does not lead straight to the server (%s): treated as a "
                "transaction pooler (no prepared statements; LISTEN only over "
                "DIRECT_DATABASE_URL). Set POSTGRES_POOLER=transaction or session to say which.",
                found,
            )
            pooler = "transaction"
        if pooler == "transaction":
            # A statement prepared on one server connection is unknown on the next (PgBouncer
            # before 1.21 cannot route them): "prepared statement _pg3_0 already exists".
            options["prepare_threshold"] = None
        pool = _MostRecentlyUsedPool(
            conninfo(url),
            connection_class=_PooledConnection,
            min_size=size.min,
            max_size=size.max,
            kwargs=options,
            name=options["application_name"],
            # A failed (re)connection is not retried on psycopg_pool's backoff (1, 2, 4... s,
            # which kept requests waiting 30 s after a restart): the pool shrinks and grows
            # again on the next request, and getconn() below tells "down" from "busy".
            reconnect_timeout=0,
            open=False,
        )
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        listen_url = direct_url or (None if pooler == "transaction" else url)
        return cls(pool, url, size, options, ping_after_idle, listen_url)

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection in autocommit: each statement is its own transaction."""
        return _Checkout(self)

    async def getconn(self) -> "_PooledConnection":
        """A live pooled connection (return it with `pool.putconn`). A dead one (the server
        restarted, the backend was terminated) is dropped, never handed out; when the server
        does not accept connections, DatabaseUnavailable at once rather than a long wait."""
        if self.closed:
            raise RuntimeError("the pool is closed; open a new one with Database.connect()")
        for _ in range(self.size.max + 2):
            connection = await self._wait_for_connection()
            now = time.monotonic()
            idle = now - connection.handed_out_at >= self.ping_after_idle
            connection.handed_out_at = now
            if not (idle or _has_news(connection)):
                return connection
            try:
                await AsyncConnectionPool.check_connection(connection)
            except psycopg.Error:
                await self.pool.putconn(connection)  # broken: the pool drops it, opens another
                await self._server_accepts()
            else:
                return connection
        raise DatabaseUnavailable(
            f"{settings.redacted(self.url)}: every pooled connection was dead; try again"
        )

    async def _wait_for_connection(self) -> _PooledConnection:
        try:
            return await self.pool.getconn(FIRST_WAIT_SECONDS)
        except PoolTimeout:
            # Busy, or the server is gone: a direct attempt says which, at once.
            await self._server_accepts()
        try:
            return await self.pool.getconn(self.pool.timeout - FIRST_WAIT_SECONDS)
        except PoolTimeout:
            raise DatabaseUnavailable(
                f"no free connection to {settings.redacted(self.url)} after "
                f"{self.pool.timeout:.0f} s: the pool (max {self.size.max}) is busy"
            ) from None

    async def _server_accepts(self) -> None:
        """Raises DatabaseUnavailable unless the server accepts a connection now. Concurrent
        callers share one attempt, and a success holds for PROBE_EVERY_SECONDS."""
        if time.monotonic() - self._probed_at < PROBE_EVERY_SECONDS:
            return
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(_probe(self.url, self.options))
        await asyncio.shield(self._probe)
        self._probed_at = time.monotonic()

    async def check_server(self) -> None:
        """Raises DatabaseUnavailable unless the server accepts a connection now: one direct
        attempt, outside the pool, so psycopg_pool neither retries nor logs it."""
        await _probe(self.url, self.options)

    async def replace_idle(self) -> None:
        """Closes the idle pooled connections and opens new ones. After an outage each leads to
        a server process that is gone: getconn would find them dead one by one, and
        psycopg_pool log a warning for each."""
        await self.pool.drain()

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


async def _probe(url: URL, options: Mapping[str, Any]) -> None:
    """One direct connection, closed at once: DatabaseUnavailable with libpq's reason if the
    server does not take it."""
    await (await _open(url, options)).close()


async def _first_contact(url: URL, options: Mapping[str, Any]) -> str | None:
    """`_probe`, which also returns what sits between us and the server, if anything
    (media_db/intermediary.py)."""
    probe = await _open(url, options)
    try:
        cursor = await probe.cursor(row_factory=tuple_row).execute(intermediary.BACKEND_END)
        seen = await cursor.fetchone() or (None, None, None, None, 0)
        return intermediary.between(probe.pgconn.socket, seen)
    finally:
        await probe.close()


async def _open(url: URL, options: Mapping[str, Any]) -> Connection:
    try:
        return await psycopg.AsyncConnection.connect(conninfo(url), **options)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(failure_message(url, error)) from None
