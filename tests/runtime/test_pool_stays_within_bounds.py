"""The pool: never more than its maximum of server sessions (counted by the server, by
application_name), its minimum warm from the start, closing twice is fine, closed means closed."""

import asyncio
import secrets

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db.connect import DatabaseUnavailable
from media_db.pool import Database, PoolSize
from media_db.settings import DatabaseNotConfigured
from tests.faults import wait_until

SESSIONS = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")


def test_hundred_tasks_never_open_more_than_the_maximum(migrated: URL) -> None:
    name = f"media-analysis-test-{secrets.token_hex(4)}"
    watcher = create_engine(migrated, poolclass=pool.NullPool)
    observed: list[int] = []

    async def scenario() -> int:
        db = await Database.connect(migrated, application_name=name)
        assert db.size == PoolSize(2, 10)  # the plan's defaults
        observed.append(count())
        done = 0

        async def task() -> None:
            nonlocal done
            async with db.transaction() as connection:
                await connection.execute("SELECT pg_sleep(0.02)")
            done += 1

        async def watch() -> None:
            for _ in range(2000):  # bounded: a failing task must not hang the test
                if done == 100:
                    return
                observed.append(await asyncio.to_thread(count))
                await asyncio.sleep(0.005)

        await asyncio.gather(watch(), *(task() for _ in range(100)))
        await db.close()
        await db.close()  # idempotent
        with pytest.raises(RuntimeError, match="pool is closed"):
            async with db.transaction():
                pass
        return done

    def count() -> int:
        with watcher.connect() as connection:
            return int(connection.scalar(SESSIONS, {"name": name}) or 0)

    assert asyncio.run(scenario()) == 100
    assert observed[0] == 2, "the minimum is warmed at connect"
    assert max(observed) == 10, f"peak sessions {max(observed)}"
    # The server ends a backend shortly after its client hangs up (later on a loaded machine).
    wait_until(lambda: count() == 0, "close() released every session")


def test_pool_size_comes_from_the_environment_and_is_checked() -> None:
    assert PoolSize.from_environment({"POSTGRES_POOL_MIN": "1", "POSTGRES_POOL_MAX": "4"}) == (
        PoolSize(1, 4)
    )
    for bad in (
        {"POSTGRES_POOL_MIN": "5", "POSTGRES_POOL_MAX": "4"},
        {"POSTGRES_POOL_MAX": "0"},
        {"POSTGRES_POOL_MIN": "-1"},
        # Digits of other scripts: ASCII ones only, as everywhere (² made int() raise).
        {"POSTGRES_POOL_MAX": "\u0665"},  # Arabic-Indic five
        {"POSTGRES_POOL_MAX": "\uff15"},  # fullwidth five
        {"POSTGRES_POOL_MAX": "\u00b2"},  # superscript two
    ):
        with pytest.raises(DatabaseNotConfigured, match="POSTGRES_POOL"):
            PoolSize.from_environment(bad)


def test_unreachable_database_is_one_clear_error() -> None:
    url = URL.create(
        "postgresql+psycopg",
        username="u",
        password="secret-pw",
        host="127.0.0.1",
        port=1,
        database="d",
    )
    with pytest.raises(DatabaseUnavailable, match=r"Cannot connect to .*127\.0\.0\.1:1") as raised:
        asyncio.run(Database.connect(url))
    assert "secret-pw" not in str(raised.value)


def test_a_dead_idle_connection_is_replaced_not_handed_out(migrated: URL) -> None:
    name = f"media-analysis-test-{secrets.token_hex(4)}"
    killer = create_engine(migrated, poolclass=pool.NullPool)

    async def scenario() -> str:
        async with await Database.connect(
            migrated, PoolSize(1, 1), application_name=name, ping_after_idle=0
        ) as db:
            await db.server_version()
            with killer.connect() as connection:  # e.g. a server restart or an idle timeout
                killed = connection.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": name},
                )
            assert killed == 1
            return await db.server_version()  # would raise if the dead one were handed out

    assert asyncio.run(scenario())


def test_a_quiet_stretch_reuses_the_most_recently_used_connection(migrated: URL) -> None:
    # psycopg_pool alone rotates first-in, first-out over every open backend: see
    # media_db.pool._MostRecentlyUsedPool for what that cost.
    async def scenario() -> tuple[set[int], int, int]:
        async with await Database.connect(migrated, PoolSize(4, 4)) as db:
            await db.pool.wait()  # all four open, as after a busy stretch

            async def backend() -> int:
                async with db.connection() as connection:
                    return connection.info.backend_pid

            sequential = {await backend() for _ in range(20)}
            first, second = await db.getconn(), await db.getconn()
            await db.pool.putconn(first)
            await db.pool.putconn(second)
            return sequential, second.info.backend_pid, await backend()

    sequential, returned_last, handed_out = asyncio.run(scenario())
    assert len(sequential) == 1, f"20 sequential checkouts used backends {sorted(sequential)}"
    assert handed_out == returned_last, "the next checkout takes the connection returned last"
