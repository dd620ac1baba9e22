"""The worker loop: several processes drain a queue and every job is handled exactly once and
ends completed or failed, also while their database sessions are terminated mid-batch; a
cancelled worker hands back the jobs it held."""

import asyncio
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import URL, create_engine, pool, text

from media_db import Database, JobQueue, JobRecord, NewJob, run_worker
from tests.helpers import REPO_ROOT, job_counts

JOBS, PROCESSES = 1_500, 3


def seed(url: URL) -> None:
    async def enqueue() -> None:
        async with await Database.connect(url) as db:
            await JobQueue(db).enqueue_many(
                # priority 0 fails on purpose (worker_process.py): once, for good.
                [
                    NewJob("transcode", priority=i % 7, max_attempts=1 if i % 7 == 0 else None)
                    for i in range(JOBS)
                ]
            )

    asyncio.run(enqueue())


def drain(url: URL, out: Path, application_name: str) -> list[subprocess.CompletedProcess[str]]:
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.runtime.worker_process",
                url.render_as_string(False),
                str(out / f"{n}.txt"),
                application_name,
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    done = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(worker.args, worker.returncode, stdout, stderr))
    return done


def assert_each_job_handled_once_and_finished(url: URL, out: Path) -> None:
    handled = Counter(line for path in out.glob("*.txt") for line in path.read_text().split())
    assert len(handled) == JOBS, "a job was never handled"
    twice = [key for key, count in handled.items() if count > 1]
    assert not twice, f"handled more than once: {twice[:5]}"
    failing = sum(1 for i in range(JOBS) if i % 7 == 0)
    assert job_counts(url) == {"completed": JOBS - failing, "failed": failing}


def test_processes_drain_the_queue_each_job_exactly_once(migrated: URL, tmp_path: Path) -> None:
    seed(migrated)
    results = drain(migrated, tmp_path, f"worker-test-{secrets.token_hex(3)}")
    for result in results:
        assert result.returncode == 0, result.stderr
    assert sum(1 for result in results if "completed=0 " not in result.stdout) > 1, (
        "the processes did not actually share the work"
    )
    assert_each_job_handled_once_and_finished(migrated, tmp_path)


def test_terminated_backends_mid_batch_lose_no_job(migrated: URL, tmp_path: Path) -> None:
    seed(migrated)
    name = f"worker-test-{secrets.token_hex(3)}"
    killer = create_engine(migrated, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    stop, kills = threading.Event(), [0]

    def terminate_sessions() -> None:
        with killer.connect() as connection:
            for _ in range(2_000):  # bounded; stops with the workers
                if stop.wait(0.05):
                    return
                kills[0] += (
                    connection.scalar(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :name"
                        ),
                        {"name": name},
                    )
                    or 0
                )

    thread = threading.Thread(target=terminate_sessions)
    thread.start()
    try:
        results = drain(migrated, tmp_path, name)
    finally:
        stop.set()
        thread.join()
    assert kills[0] > 3, "no session was terminated: the test proved nothing"
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]

    # A claim whose reply was lost with its session leaves jobs running with no worker:
    # requeue_stuck hands them back, and a calm run finishes them.
    async def requeue() -> None:
        async with await Database.connect(migrated) as db:
            await JobQueue(db).requeue_stuck(timedelta(microseconds=1))

    for _ in range(3):
        if set(job_counts(migrated)) <= {"completed", "failed"}:
            break
        asyncio.run(requeue())
        for result in drain(migrated, tmp_path, f"{name}-calm"):
            assert result.returncode == 0, result.stderr[-3000:]
    assert_each_job_handled_once_and_finished(migrated, tmp_path)


def test_a_cancelled_worker_hands_back_what_it_holds(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue_many([NewJob("transcode", priority=20 - i) for i in range(20)])
            started = asyncio.Event()
            forever = asyncio.Event()

            async def handler(job: JobRecord) -> None:
                if job.priority is not None and job.priority >= 18:
                    return  # three quick ones finish before the cancel
                started.set()
                await forever.wait()

            worker = asyncio.create_task(run_worker(db, handler, batch_size=10, concurrency=10))
            await asyncio.wait_for(started.wait(), timeout=30)
            await asyncio.sleep(0.05)
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the worker swallowed its cancellation")

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 60
    assert job_counts(migrated) == {"completed": 3, "queued": 17}
