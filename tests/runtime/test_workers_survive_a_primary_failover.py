"""A primary failover of a real pg_auto_failover formation (a monitor and two nodes,
tests/topologies.py) is survived, through the multi-host URL the formation hands out
(`target_session_attrs=read-write`):

- workers drain the queue through it: every job ends completed, none stays running past its
  lease, and a handler runs twice only for a job whose completion was in flight when the primary
  went (at most the jobs the workers held); once with `pg_autoctl perform failover`, once with
  kill -9 of the primary's postmaster;
- a migration cut half-way through a batched backfill finishes when run again, on the new
  primary, with nothing left behind;
- the API: a call during the failover fails with DatabaseUnavailable (nothing else), and the
  next call after it succeeds on the same pool.

Marked `failover`: `make test-failover` runs them (CI does, after `make test`)."""

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool

from media_db import (
    Database,
    DatabaseUnavailable,
    JobQueue,
    JobRecord,
    MediaRepository,
    NewJob,
    NewMedia,
    PoolSize,
    run_worker,
    settings,
)
from media_db.deploy.project import VERSION_TABLE
from tests import topologies
from tests.helpers import HEAD, alembic_config, environment, job_counts, run, start

JOBS = 5_000
WORKERS, CONCURRENCY, BATCH = 2, 10, 10
LEASE = timedelta(seconds=10)  # what a job lost with the old primary waits before a retry
DEADLINE_SECONDS = 300.0  # for any one condition, on a loaded 2-core machine
# A provider call's worth of time: the drain (5,000 jobs, 20 at once) outlasts the failover.
HANDLER_SECONDS = 0.05

pytestmark = pytest.mark.failover


@pytest.fixture
def formation() -> Iterator[topologies.Formation]:
    try:
        with topologies.formation() as made:
            yield made
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


def migrated_database(formation: topologies.Formation) -> URL:
    """A database at head on the formation's primary, as the URL it hands out reaches it."""
    with psycopg.connect(formation.uri(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE media_failover")
    url = settings.database_url({"DATABASE_URL": formation.uri("media_failover")})
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "head")
    return url


def failover(formation: topologies.Formation) -> None:
    formation.autoctl("perform", "failover", "--pgdata", str(formation.monitor))


def kill_the_primary(formation: topologies.Formation) -> None:
    pidfile = formation.node(formation.primary_port()) / "postmaster.pid"
    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


def over(formation: topologies.Formation) -> None:
    """Wait for the failover's end: the monitor settled, and a primary taking writes."""
    formation.wait_until_settled()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            with psycopg.connect(formation.uri(), connect_timeout=5):
                return
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "no primary took writes after the failover"
            time.sleep(0.1)


def scalar(url: URL, sql: str) -> object:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return connection.exec_driver_sql(sql).scalar()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {DEADLINE_SECONDS:g} s: {what}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "fault", [failover, kill_the_primary], ids=["perform failover", "kill -9 of the primary"]
)
def test_workers_complete_every_job_once_through_a_failover(
    formation: topologies.Formation, fault: Callable[[topologies.Formation], None]
) -> None:
    url = migrated_database(formation)
    runs: Counter[object] = Counter()
    primary = formation.primary_port()

    async def scenario() -> int:
        async with await Database.connect(url, PoolSize(2, 10)) as db:
            await JobQueue(db).enqueue_many([NewJob("transcode") for _ in range(JOBS)])

        async def handler(job: JobRecord) -> None:
            runs[job.id] += 1
            await asyncio.sleep(HANDLER_SECONDS)

        async def worker() -> None:
            async with await Database.connect(url, PoolSize(2, 10)) as db:
                await run_worker(
                    db,
                    handler,
                    until_empty=True,
                    batch_size=BATCH,
                    concurrency=CONCURRENCY,
                    poll_interval=0.2,
                    lease=LEASE,
                )

        workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
        await until(lambda: len(runs) >= JOBS // 5, "a fifth of the jobs to run")
        await asyncio.to_thread(fault, formation)
        ran_by_the_faults_end = len(runs)
        await asyncio.wait_for(asyncio.gather(*workers), DEADLINE_SECONDS)
        return ran_by_the_faults_end

    ran_by_the_faults_end = asyncio.run(scenario())
    assert ran_by_the_faults_end < JOBS, "the drain ended before the fault: it proved nothing"
    if fault is failover:
        assert formation.primary_port() != primary
    assert job_counts(url) == {"completed": JOBS}
    assert len(runs) == JOBS
    again = sum(count - 1 for count in runs.values())
    # Only jobs held when the primary went can run twice: their completion may not have
    # reached the new primary.
    held = WORKERS * (CONCURRENCY + BATCH)
    assert again <= held, again
    # Each job's attempts, as the new primary has them: one, or two for those held.
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        attempts: dict[int, int] = dict(
            connection.exec_driver_sql(
                "SELECT attempts, count(*) FROM processing_jobs GROUP BY attempts"
            ).all()
        )
    assert set(attempts) <= {1, 2}, attempts
    assert attempts.get(2, 0) <= held, attempts


NULL_JOBS = 30_000  # six batches of 0003's backfill


@pytest.mark.parametrize(
    "fault", [failover, kill_the_primary], ids=["perform failover", "kill -9 of the primary"]
)
def test_a_migration_cut_by_a_failover_finishes_when_run_again_on_the_new_primary(
    formation: topologies.Formation, fault: Callable[[topologies.Formation], None]
) -> None:
    with psycopg.connect(formation.uri(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE media_failover")
    url = settings.database_url({"DATABASE_URL": formation.uri("media_failover")})
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        # n8n's explicit NULLs, which 0003 backfills in committed batches.
        connection.exec_driver_sql(
            "INSERT INTO processing_jobs (workflow_type, status) "
            f"SELECT 'transcode', NULL FROM generate_series(1, {NULL_JOBS})"
        )
    env = environment(url)
    upgrade = ["alembic", "-x", "backfill-pause=1s", "upgrade", "head"]
    cut = start(upgrade, env)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while scalar(url, "SELECT count(*) FROM processing_jobs WHERE status IS NOT NULL") == 0:
        assert cut.poll() is None, cut.communicate()
        assert time.monotonic() < deadline, "0003's first batch never committed"
        time.sleep(0.1)
    fault(formation)
    out, err = cut.communicate(timeout=DEADLINE_SECONDS)
    over(formation)
    if cut.returncode != 0:  # cut: one line saying so, then the same command again
        assert "Traceback" not in out + err, out + err
        assert "upgrade 0002 -> 0003 failed" in out + err, out + err
        # After kill -9 the monitor may still fail over once the keeper has restarted the
        # old primary: while no node takes writes a deploy is refused as unavailable, and a
        # re-run that reached the old primary is cut again when it is demoted. Either way it
        # says so in one line, and is run again, as an operator would.
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (rerun := run(upgrade, env, timeout=DEADLINE_SECONDS)).returncode != 0:
            said = rerun.stdout + rerun.stderr
            assert "Traceback" not in said, said
            assert "Cannot connect" in said or "FAILED: upgrade" in said, said
            assert time.monotonic() < deadline, said
            over(formation)
    assert scalar(url, "SELECT count(*) FROM processing_jobs WHERE status IS NULL") == 0
    assert scalar(url, f"SELECT version_num FROM {VERSION_TABLE}") == HEAD
    verified = run(["python", "-m", "media_db.deploy.verify"], env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize(
    "fault", [failover, kill_the_primary], ids=["perform failover", "kill -9 of the primary"]
)
def test_api_calls_fail_in_one_error_during_a_failover_and_succeed_after_it(
    formation: topologies.Formation, fault: Callable[[topologies.Formation], None]
) -> None:
    url = migrated_database(formation)
    failures: list[BaseException] = []

    async def scenario() -> None:
        async with await Database.connect(url, PoolSize(2, 10)) as db:
            media = MediaRepository(db)
            item = await media.create(NewMedia(source_url="s3://a", source_type="upload"))
            done = asyncio.Event()

            async def calls() -> None:
                while not done.is_set():
                    try:
                        await media.get(item.id)
                    except Exception as error:  # what a caller would meet, whatever it is
                        failures.append(error)
                    await asyncio.sleep(0.02)

            caller = asyncio.create_task(calls())
            await asyncio.to_thread(fault, formation)
            await asyncio.to_thread(over, formation)
            done.set()
            await caller
            # After it: the next call succeeds, on the same pool, with no restart.
            assert await media.get(item.id) == item

    asyncio.run(scenario())
    assert all(isinstance(error, DatabaseUnavailable) for error in failures), failures
