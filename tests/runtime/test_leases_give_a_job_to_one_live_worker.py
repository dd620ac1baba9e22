"""Leases: a slow but live handler keeps its job (its worker renews the lease), so no job runs
twice; a job whose worker died (also a process killed while its handlers run) comes back once
its lease expires, as another attempt; a worker that lost its lease can neither complete nor
fail the job another worker now holds."""

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import URL, create_engine, pool, text

from media_db import Database, JobQueue, JobRecord, NewJob, PoolSize, WorkerStats, run_worker
from media_db.models import JobStatus
from tests.helpers import REPO_ROOT

LEASE = timedelta(seconds=1)
# Long enough that a loaded machine never lets it lapse before the kill (renewed every third).
LEASE_AT_KILL = timedelta(seconds=10)
LEASE_AT_DEATH = text("SELECT now(), max(locked_until) FROM processing_jobs")


def expire_leases(url: URL) -> None:
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text("UPDATE processing_jobs SET locked_until = now() - interval '1s'"))


def test_slow_handlers_outliving_their_lease_never_run_twice(migrated: URL) -> None:
    async def scenario() -> Counter[object]:
        async with await Database.connect(migrated, PoolSize(1, 8)) as db:
            queue = JobQueue(db)
            for _ in range(6):
                await queue.enqueue("transcode")
            runs: Counter[object] = Counter()

            async def slow(job: JobRecord) -> None:
                runs[job.id] += 1
                await asyncio.sleep(3 * LEASE.total_seconds())  # three leases long

            workers = [
                run_worker(
                    db, slow, until_empty=True, lease=LEASE, concurrency=3, poll_interval=0.1
                )
                for _ in range(2)
            ]
            stats = await asyncio.gather(*workers)
            assert sum(s.completed for s in stats) == 6
            assert sum(s.lost for s in stats) == 0
            return runs

    runs = asyncio.run(scenario())
    assert len(runs) == 6
    assert set(runs.values()) == {1}


def test_a_dead_workers_job_comes_back_as_another_attempt(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 4)) as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode")
            abandoned = await queue.claim(lease=LEASE)  # its worker "dies" here
            assert abandoned is not None
            assert abandoned.attempts == 1
            assert await queue.claim() is None  # leased: nobody else gets it
            seen: list[int] = []

            async def handler(job: JobRecord) -> None:
                seen.append(job.attempts)

            # Within one lease and one poll, a live worker rescues it.
            stats = await asyncio.wait_for(
                run_worker(db, handler, until_empty=True, poll_interval=0.2), timeout=60
            )
            assert stats.completed == 1
            assert seen == [2]

    asyncio.run(scenario())


def test_a_killed_workers_jobs_come_back_once_its_lease_runs_out(
    migrated: URL, tmp_path: Path
) -> None:
    """A worker process is killed (SIGKILL: no hand-back) while its handlers run, beside a live
    worker that has nothing to do: the jobs stay the dead one's until its lease runs out, then
    the live worker's next poll takes them up, each as a second attempt."""
    held, poll = 4, 0.2
    engine = create_engine(migrated, poolclass=pool.NullPool)

    async def scenario() -> tuple[WorkerStats, datetime, datetime]:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue_many([NewJob("transcode") for _ in range(held)])
            doomed = start_hanging_worker(migrated, tmp_path, LEASE_AT_KILL)
            try:
                deadline = time.monotonic() + 120
                while len(started(tmp_path)) != held:  # its handlers run: the claim came back
                    assert doomed.poll() is None, (tmp_path / "worker.log").read_text()
                    assert time.monotonic() < deadline, "the worker never ran every job"
                    await asyncio.sleep(0.05)

                async def handler(job: JobRecord) -> None:
                    return None

                live = asyncio.create_task(
                    run_worker(db, handler, until_empty=True, poll_interval=poll)
                )
            finally:
                doomed.send_signal(signal.SIGKILL)
                await asyncio.to_thread(doomed.wait, 60)
            with engine.connect() as connection:
                killed_at, leased_until = connection.execute(LEASE_AT_DEATH).one()
            stats = await asyncio.wait_for(live, timeout=120)
            return stats, killed_at, leased_until

    stats, killed_at, leased_until = asyncio.run(scenario())
    assert stats.completed == held
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT status, attempts, started_at FROM processing_jobs"))
        outcomes = rows.all()
    assert {(status, attempts) for status, attempts, _ in outcomes} == {("completed", 2)}
    taken_up = sorted(started for _, _, started in outcomes)
    assert taken_up[0] >= leased_until, "a job was taken while the dead worker's lease held"
    # Within one lease and one poll of the death (a lease more of room for a loaded machine):
    # the lease it asked for decides, not the default one of 60 s.
    assert taken_up[-1] - killed_at < 2 * LEASE_AT_KILL, (killed_at, leased_until, taken_up)


def started(out: Path) -> list[str]:
    """The jobs whose handler the hanging worker has started."""
    handled = out / "handled.txt"
    return handled.read_text().split() if handled.exists() else []


def start_hanging_worker(url: URL, out: Path, lease: timedelta) -> subprocess.Popen[bytes]:
    """A worker process whose handlers never return, leasing for `lease`."""
    with (out / "worker.log").open("w") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.runtime.worker_process"),
                *(url.render_as_string(False), str(out / "handled.txt")),
                *("doomed-worker", str(lease.total_seconds())),
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_that_lost_its_lease_cannot_complete_or_fail_the_job(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 4)) as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode")
            first = await queue.claim(lease=LEASE)
            assert first is not None
            await asyncio.to_thread(expire_leases, migrated)
            assert await queue.rescue_expired()
            second = await queue.claim()
            assert second is not None
            assert second.id == first.id
            assert second.lease_token != first.lease_token
            assert await queue.complete_held([first]) == []
            assert await queue.fail_held([(first, "late")], timedelta(seconds=1)) == []
            assert await queue.extend([first], LEASE) == set()
            assert await queue.release_held([first]) == []
            # The worker's round (complete what returned, claim more) writes nothing for it
            # either, and still claims.
            await queue.enqueue("transcode")
            completed, claimed = await queue.complete_and_claim([first], 5)
            assert completed == set()
            assert [job.id for job in claimed] != [first.id]
            assert len(claimed) == 1
            [done] = await queue.complete_held([second])
            assert done.status == "completed"
            assert done.attempts == 2

    asyncio.run(scenario())


def test_a_spent_job_whose_lease_expired_is_a_dead_letter(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 4)) as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode", max_attempts=1)
            assert await queue.claim(lease=LEASE) is not None
            await asyncio.to_thread(expire_leases, migrated)
            [dead] = await queue.rescue_expired()
            assert dead.status == "failed"
            assert dead.error_message == "lease expired: its worker stopped answering"

    asyncio.run(scenario())


def test_a_workers_round_completes_what_it_holds_and_claims_in_order(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated, PoolSize(1, 4)) as db:
            queue = JobQueue(db)
            for priority in (1, 5, 3):
                await queue.enqueue("transcode", priority)
            held = await queue.claim_many(2)
            completed, claimed = await queue.complete_and_claim(held, 10)
            assert completed == {job.id for job in held}
            assert [job.priority for job in claimed] == [1]
            # Nothing left to claim: the completions are still written and returned.
            completed, claimed = await queue.complete_and_claim(claimed, 10)
            assert len(completed) == 1
            assert claimed == []
            counts = await queue.counts()
            assert counts[JobStatus.COMPLETED] == 3
            assert counts[JobStatus.RUNNING] == counts[JobStatus.QUEUED] == 0

    asyncio.run(scenario())
