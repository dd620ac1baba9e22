"""The worker loop: several processes drain a queue and every job is handled exactly once and
ends completed or failed, also while their database sessions are terminated mid-batch; a
cancelled worker hands back the jobs it held."""

import asyncio
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db import Database, JobQueue, JobRecord, NewJob, run_worker
from tests.helpers import REPO_ROOT, job_counts

JOBS, PROCESSES = 1_500, 3
KILL_ROUNDS = 1_000  # rounds that find no batch held count too: a bound, not a target
HOLDING = "SELECT EXISTS (SELECT FROM processing_jobs WHERE status = 'running')"
TERMINATE = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name
"""


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


def start_workers(url: URL, out: Path, application_name: str) -> list[subprocess.Popen[str]]:
    """PROCESSES workers; each appends the ids it handles to out/N.txt, its output to out/N.log
    (a file: a pipe nobody reads yet could fill and stall it)."""
    workers = []
    for n in range(PROCESSES):
        with (out / f"{n}.log").open("a") as log:
            workers.append(
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
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
    return workers


def finish(workers: list[subprocess.Popen[str]], out: Path) -> list[tuple[int, str]]:
    """Each worker's exit status and output, once it has ended."""
    return [
        (worker.wait(timeout=600), (out / f"{n}.log").read_text()[-3000:])
        for n, worker in enumerate(workers)
    ]


def drain(url: URL, out: Path, application_name: str) -> list[tuple[int, str]]:
    return finish(start_workers(url, out, application_name), out)


def handled_by_each(out: Path) -> list[int]:
    return [
        len(path.read_text().split()) if path.exists() else 0
        for path in (out / f"{n}.txt" for n in range(PROCESSES))
    ]


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
    for code, output in results:
        assert code == 0, output
    assert sum(1 for _, output in results if "completed=0 " not in output) > 1, (
        "the processes did not actually share the work"
    )
    assert_each_job_handled_once_and_finished(migrated, tmp_path)


def test_terminated_backends_mid_batch_lose_no_job(migrated: URL, tmp_path: Path) -> None:
    seed(migrated)
    name = f"worker-test-{secrets.token_hex(3)}"
    killer = create_engine(migrated, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    workers = start_workers(migrated, tmp_path, name)
    stop, kills = threading.Event(), [0]

    def terminate_sessions() -> None:
        """Rounds of terminating every session of the workers while a batch is held. The next
        round waits until each worker still running has handled a job since, so a worker's
        retries (bounded) are never all spent on one round however slow the machine is."""

        def each_worker_moved_on(before: list[int]) -> bool:
            now = handled_by_each(tmp_path)
            return all(
                w.poll() is not None or n > b for w, n, b in zip(workers, now, before, strict=True)
            )

        with killer.connect() as connection:
            for _ in range(KILL_ROUNDS):
                if stop.wait(0.01):
                    return
                if not connection.scalar(text(HOLDING)):
                    continue
                kills[0] += connection.scalar(text(TERMINATE), {"name": name}) or 0
                before = handled_by_each(tmp_path)
                while not each_worker_moved_on(before):
                    if stop.wait(0.01):
                        return

    thread = threading.Thread(target=terminate_sessions)
    thread.start()
    try:
        results = finish(workers, tmp_path)
    finally:
        stop.set()
        thread.join()
    assert kills[0] > 3, "no session was terminated: the test proved nothing"
    for code, output in results:
        assert code == 0, output

    # A claim whose reply was lost with its session leaves jobs running with no worker:
    # requeue_stuck hands them back, and a calm run finishes them.
    async def requeue() -> None:
        async with await Database.connect(migrated) as db:
            await JobQueue(db).requeue_stuck(timedelta(microseconds=1))

    for _ in range(3):
        if set(job_counts(migrated)) <= {"completed", "failed"}:
            break
        asyncio.run(requeue())
        for code, output in drain(migrated, tmp_path, f"{name}-calm"):
            assert code == 0, output
    assert_each_job_handled_once_and_finished(migrated, tmp_path)


def test_a_cancelled_worker_hands_back_what_it_holds(migrated: URL) -> None:
    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue_many([NewJob("transcode", priority=20 - i) for i in range(20)])
            started, quick_ones_done, forever = asyncio.Event(), asyncio.Event(), asyncio.Event()
            quick = 0

            async def handler(job: JobRecord) -> None:
                nonlocal quick
                if job.priority is not None and job.priority >= 18:
                    quick += 1  # three quick ones finish before the cancel
                    if quick == 3:
                        quick_ones_done.set()
                    return
                started.set()
                await forever.wait()

            worker = asyncio.create_task(run_worker(db, handler, batch_size=10, concurrency=10))
            await asyncio.wait_for(asyncio.gather(started.wait(), quick_ones_done.wait()), 120)
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the worker swallowed its cancellation")

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 120
    assert job_counts(migrated) == {"completed": 3, "queued": 17}


def test_a_worker_cancelled_while_its_round_commits_hands_back_that_rounds_claims(
    migrated: URL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancel arrives after the round's statement committed (job 1 completed, job 2
    claimed) and before the worker read its result: the worker still knows both, so job 2 is
    handed back at once rather than left running for a lease, and nothing is reported lost."""
    committed, answered = asyncio.Event(), asyncio.Event()
    complete_and_claim = JobQueue.complete_and_claim

    async def answer_late(queue: JobQueue, *args: Any, **kwargs: Any) -> Any:
        result = await complete_and_claim(queue, *args, **kwargs)
        if result[0]:  # the round that completed job 1
            committed.set()
            await answered.wait()
        return result

    monkeypatch.setattr(JobQueue, "complete_and_claim", answer_late)

    async def scenario() -> None:
        async with await Database.connect(migrated) as db:
            queue = JobQueue(db)
            await queue.enqueue("transcode", priority=2)

            async def handler(job: JobRecord) -> None:
                if job.priority == 2:
                    await queue.enqueue("transcode", priority=1)  # the round's next claim

            worker = asyncio.create_task(run_worker(db, handler, batch_size=1, concurrency=1))
            await asyncio.wait_for(committed.wait(), 120)
            worker.cancel()
            answered.set()
            with pytest.raises(asyncio.CancelledError):
                await worker

    with caplog.at_level(logging.WARNING, logger="media_db.worker"):
        asyncio.run(scenario())
    assert job_counts(migrated) == {"completed": 1, "queued": 1}
    assert not [record for record in caplog.records if "lease was lost" in record.getMessage()]
