"""After a server restart or terminated sessions, the pool's next request succeeds as soon as
the server takes connections again; while the server is down, a request fails at once with a
clear DatabaseUnavailable (no secret in it), never a 30 s wait for PoolTimeout. Against an
embedded server this test starts, restarts and stops itself."""

import asyncio
import secrets
import time

import pytest
from sqlalchemy import create_engine, pool, text

from media_db import Database, PoolSize
from media_db.connect import DatabaseUnavailable
from media_db.dev.embedded import LocalServer

# Far below psycopg_pool's 30 s: "about a second", with room for a slow CI machine.
PROMPT_SECONDS = 5.0
GONE = text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")


async def fill_pool(db: Database) -> None:
    """Every pooled connection used once, then idle for longer than the ping threshold."""

    async def use() -> None:
        async with db.connection() as connection:
            await connection.execute("SELECT pg_sleep(0.5)")

    await asyncio.gather(*(use() for _ in range(db.size.max)))


async def timed_version(db: Database) -> float:
    started = time.monotonic()
    assert await db.server_version()
    return time.monotonic() - started


def test_first_request_after_a_restart_succeeds_promptly(restartable: LocalServer) -> None:
    async def scenario() -> list[float]:
        async with await Database.connect(restartable.url(), PoolSize(2, 10)) as db:
            await fill_pool(db)
            await asyncio.sleep(2.5)  # the case: idle for 2 s or more
            restartable.restart()
            after_idle = await timed_version(db)
            await fill_pool(db)
            restartable.restart()  # and with connections used a moment ago
            return [after_idle, await timed_version(db)]

    for took in asyncio.run(scenario()):
        assert took < PROMPT_SECONDS, f"first request after the restart took {took:.1f} s"


def test_terminated_sessions_are_never_handed_out(restartable: LocalServer) -> None:
    name = f"media-analysis-test-{secrets.token_hex(3)}"
    admin = create_engine(restartable.url("postgres"), poolclass=pool.NullPool)

    async def scenario() -> None:
        async with await Database.connect(
            restartable.url(), PoolSize(2, 10), application_name=name
        ) as db:
            await fill_pool(db)
            with admin.connect() as connection:
                killed = connection.scalars(
                    # Ours chosen first, in a fence: in one WHERE the planner may terminate
                    # every backend (this session's too) before it compares the name.
                    text(
                        "WITH ours AS MATERIALIZED (SELECT pid FROM pg_stat_activity "
                        "WHERE application_name = :name) "
                        "SELECT pid FROM ours WHERE pg_terminate_backend(pid)"
                    ),
                    {"name": name},
                ).all()
                assert len(killed) >= 5, killed
                # A backend writes its termination notice to its socket before it exits.
                deadline = time.monotonic() + 120
                while connection.scalar(GONE, {"pids": killed}):
                    connection.rollback()
                    assert time.monotonic() < deadline, "terminated backends still running"
                    await asyncio.sleep(0.05)
            for _ in range(20):  # each a recently used (unpinged) connection
                assert await timed_version(db) < PROMPT_SECONDS

    asyncio.run(scenario())


def test_a_request_while_the_server_is_down_fails_at_once(restartable: LocalServer) -> None:
    url = restartable.url()
    port = url.port

    async def scenario() -> None:
        async with await Database.connect(url, PoolSize(2, 10)) as db:
            await fill_pool(db)
            restartable.stop()
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable, match="Cannot connect to") as raised:
                    await db.server_version()
                assert time.monotonic() - started < PROMPT_SECONDS
                assert url.password
                assert url.password not in str(raised.value)
            restartable.ensure_running(port)
            assert await timed_version(db) < PROMPT_SECONDS

    asyncio.run(scenario())
