"""A primary failover of a real pg_auto_failover formation (a monitor and two nodes,
tests/topologies.py) is survived, through the multi-host URL the formation hands out
(`target_session_attrs=read-write`):

- workers drain the queue through it: every job ends completed, none stays running past its
  lease, and a handler runs twice only for a job whose completion was in flight when the primary
  went (at most the jobs the workers held); once with `pg_autoctl perform failover`, once with
  kill -9 of the primary's postmaster;
- the API: a call during the failover fails with DatabaseUnavailable (nothing else), and the
  next call after it succeeds on the same pool.

Each writes down how long after the fault's start it recovered (tests/failovers.py). What a
deploy does through a failover: tests/deploy/test_deploys_survive_a_primary_failover.py.
Marked `failover`: `make test-failover` runs them (CI does, after `make test`)."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, pool

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
)
from tests import topologies
from tests.failovers import (
    DEADLINE_SECONDS,
    Fault,
    failover,
    migrated_database,
    over,
    record,
    resumed,
)
from tests.helpers import job_counts

JOBS = 5_000
WORKERS, CONCURRENCY, BATCH = 2, 10, 10
LEASE = timedelta(seconds=10)  # what a job lost with the old primary waits before a retry
HANDLER_SECONDS = 0.05  # a provider call's worth of time
# However long the fault takes, the drain must outlast it, or it proves nothing: the handlers
# of the last jobs wait for the fault's end, so those jobs run on whichever primary follows it.
HELD_BACK = JOBS // 10

pytestmark = pytest.mark.failover


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {DEADLINE_SECONDS:g} s: {what}"
        await asyncio.sleep(0.1)


def test_workers_complete_every_job_once_through_a_failover(
    formation: topologies.Formation, fault: Fault, request: pytest.FixtureRequest
) -> None:
    url = migrated_database(formation)
    runs: Counter[object] = Counter()
    started: list[float] = []  # when each handler started
    primary = formation.primary_port()

    async def scenario() -> tuple[float, float]:
        async with await Database.connect(url, PoolSize(2, 10)) as db:
            await JobQueue(db).enqueue_many([NewJob("transcode") for _ in range(JOBS)])
        fault_over = asyncio.Event()

        async def handler(job: JobRecord) -> None:
            runs[job.id] += 1
            started.append(time.monotonic())
            if len(runs) > JOBS - HELD_BACK:
                await fault_over.wait()
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
        faulted = time.monotonic()
        await asyncio.to_thread(fault, formation)
        fault_ended = time.monotonic()
        fault_over.set()
        await asyncio.wait_for(asyncio.gather(*workers), DEADLINE_SECONDS)
        return faulted, fault_ended

    faulted, fault_ended = asyncio.run(scenario())
    record(request, "workers start jobs again", resumed(faulted, started))
    assert max(started) > fault_ended, "no job started after the fault: it proved nothing"
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


def test_api_calls_fail_in_one_error_during_a_failover_and_succeed_after_it(
    formation: topologies.Formation, fault: Fault, request: pytest.FixtureRequest
) -> None:
    url = migrated_database(formation)
    failures: list[BaseException] = []
    succeeded: list[float] = []  # when each call returned

    async def scenario() -> float:
        async with await Database.connect(url, PoolSize(2, 10)) as db:
            media = MediaRepository(db)
            item = await media.create(NewMedia(source_url="s3://a", source_type="upload"))
            done = asyncio.Event()

            async def calls() -> None:
                while not done.is_set():
                    try:
                        await media.get(item.id)
                        succeeded.append(time.monotonic())
                    except Exception as error:  # what a caller would meet, whatever it is
                        failures.append(error)
                    await asyncio.sleep(0.02)

            caller = asyncio.create_task(calls())
            await until(lambda: bool(succeeded), "a first call to succeed")
            faulted = time.monotonic()
            await asyncio.to_thread(fault, formation)
            await asyncio.to_thread(over, formation)
            done.set()
            await caller
            # After it: the next call succeeds, on the same pool, with no restart.
            assert await media.get(item.id) == item
            return faulted

    faulted = asyncio.run(scenario())
    record(request, "API calls succeed again", resumed(faulted, succeeded))
    assert all(isinstance(error, DatabaseUnavailable) for error in failures), failures
