"""Through Debian's PgBouncer in transaction mode (POSTGRES_POOLER=transaction): a fleet of
workers runs each job once with no error (no prepared statement crosses server connections),
LISTEN goes over the direct URL, and without one the workers poll, saying so once."""

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool, text

from media_db import Database, JobQueue, JobRecord, NewJob, PoolSize, run_worker
from tests.helpers import alembic_config, job_counts
from tests.runtime.test_idle_workers_wake_on_any_insert import POLL_SECONDS, listening, raw_insert
from tests.topologies import Cluster

JOBS, WORKERS = 2_000, 4


def at_head(primary: Cluster, database: str) -> URL:
    url = primary.url(database)
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "head")
    return url


def test_a_fleet_through_the_pooler_runs_each_job_once_without_errors(
    debian_primary: Cluster,
    transaction_pooler: Cluster,
    primary_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = at_head(debian_primary, primary_database)
    pooled = transaction_pooler.url(primary_database)
    handled: Counter[str] = Counter()

    async def worker() -> int:
        async with await Database.connect(
            pooled, PoolSize(1, 4), pooler="transaction", direct_url=direct
        ) as db:

            async def handler(job: JobRecord) -> None:
                handled[str(job.id)] += 1

            stats = await run_worker(db, handler, batch_size=10, concurrency=10, until_empty=True)
            return stats.completed

    async def scenario() -> list[int]:
        async with await Database.connect(pooled, pooler="transaction", direct_url=direct) as db:
            await JobQueue(db).enqueue_many([NewJob("transcode") for _ in range(JOBS)])
        return await asyncio.gather(*(worker() for _ in range(WORKERS)))

    with caplog.at_level(logging.WARNING):
        completed = asyncio.run(scenario())

    assert sum(completed) == JOBS
    assert len(handled) == JOBS
    assert set(handled.values()) == {1}, "a job ran twice"
    assert sum(1 for done in completed if done) > 1, "the workers did not share the work"
    assert job_counts(direct) == {"completed": JOBS}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, errors[:5]


def test_listen_goes_over_the_direct_url_and_a_raw_insert_starts_at_once(
    debian_primary: Cluster, transaction_pooler: Cluster, primary_database: str
) -> None:
    direct = at_head(debian_primary, primary_database)
    pooled = transaction_pooler.url(primary_database)

    async def scenario() -> float:
        async with await Database.connect(
            pooled, PoolSize(1, 4), pooler="transaction", direct_url=direct
        ) as db:
            started = asyncio.Event()

            async def handler(job: JobRecord) -> None:
                started.set()

            worker = asyncio.create_task(run_worker(db, handler, poll_interval=POLL_SECONDS))
            await asyncio.wait_for(listening(direct), timeout=60)
            inserted = time.monotonic()
            await asyncio.to_thread(raw_insert, pooled)  # n8n's INSERT, through the pooler
            await asyncio.wait_for(started.wait(), timeout=POLL_SECONDS / 2)
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
            return time.monotonic() - inserted

    assert asyncio.run(scenario()) < POLL_SECONDS / 2


def test_without_a_direct_url_workers_poll_and_say_so_once(
    debian_primary: Cluster,
    transaction_pooler: Cluster,
    primary_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = at_head(debian_primary, primary_database)
    pooled = transaction_pooler.url(primary_database)

    async def scenario() -> int:
        async with await Database.connect(pooled, PoolSize(1, 4), pooler="transaction") as db:
            queue = JobQueue(db)
            await queue.enqueue_many([NewJob("transcode") for _ in range(3)])

            async def handler(job: JobRecord) -> None:
                pass

            stats = await run_worker(
                db, handler, poll_interval=0.2, until_empty=True, lease=timedelta(seconds=30)
            )
            return stats.completed

    with caplog.at_level(logging.WARNING, logger="media_db.worker"):
        assert asyncio.run(scenario()) == 3
    polling = [r.getMessage() for r in caplog.records if "not listening" in r.getMessage()]
    assert len(polling) == 1, polling
    assert "DIRECT_DATABASE_URL" in polling[0]
    with create_engine(direct, poolclass=pool.NullPool).connect() as connection:
        listeners = connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
        )
    assert listeners == 0


def test_an_undeclared_pooler_is_seen_and_treated_as_a_transaction_pooler(
    debian_primary: Cluster,
    transaction_pooler: Cluster,
    primary_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Four workers through the pooler with no POSTGRES_POOLER: no prepared statement crosses
    server connections (no DuplicatePreparedStatement), and each pool says once how to declare
    it."""
    direct = at_head(debian_primary, primary_database)
    pooled = transaction_pooler.url(primary_database)
    jobs, workers = 400, 4

    async def worker() -> int:
        async with await Database.connect(pooled, PoolSize(1, 4), direct_url=direct) as db:

            async def handler(job: JobRecord) -> None:
                pass

            stats = await run_worker(db, handler, batch_size=10, concurrency=10, until_empty=True)
            return stats.completed

    async def scenario() -> list[int]:
        async with await Database.connect(pooled, direct_url=direct) as db:
            await JobQueue(db).enqueue_many([NewJob("transcode") for _ in range(jobs)])
        return await asyncio.gather(*(worker() for _ in range(workers)))

    with caplog.at_level(logging.WARNING):
        assert sum(asyncio.run(scenario())) == jobs
    assert job_counts(direct) == {"completed": jobs}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 + workers, warnings[:5]
    assert all("does not lead straight to the server" in w for w in warnings), warnings[:5]
    assert all("POSTGRES_POOLER" in w for w in warnings)
