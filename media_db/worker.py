"""A worker loop, so a user writes the handler and nothing else:

    async def transcode(job: JobRecord) -> None: ...
    await run_worker(db, transcode, workflow_type="transcode", batch_size=10, concurrency=10)

Each round claims up to `batch_size` jobs in one statement, runs their handlers at most
`concurrency` at a time, then marks the ones whose handler returned `completed` and the ones
whose handler raised `failed` (with the exception as message): one statement each. When the
loop is cancelled it hands back to the queue whatever it still holds.

Database errors on the way (a terminated backend, a restart) are retried with backoff: marking
jobs only touches jobs still `running`, so a retry cannot mark one twice. A claim whose reply
was lost leaves its jobs `running` with no worker: `JobQueue.requeue_stuck` returns them.
"""

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from media_db import validation
from media_db.errors import DatabaseUnavailable, InvalidInput
from media_db.pool import Database
from media_db.records import JobRecord
from media_db.repositories.jobs import JobQueue

log = logging.getLogger(__name__)
T = TypeVar("T")
Handler = Callable[[JobRecord], Awaitable[object]]
RETRIES = 8
FIRST_BACKOFF_SECONDS = 0.05


@dataclass
class WorkerStats:
    completed: int = 0
    failed: int = 0


async def run_worker(
    db: Database,
    handler: Handler,
    *,
    workflow_type: str | None = None,
    batch_size: int = 10,
    concurrency: int = 10,
    poll_interval: float = 1.0,
    until_empty: bool = False,
) -> WorkerStats:
    """Runs until cancelled (or, with `until_empty`, until a claim finds nothing)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInput("concurrency", f"must be a whole number >= 1, got {concurrency!r}")
    validation.positive("poll_interval", poll_interval)
    queue = JobQueue(db)
    stats = WorkerStats()
    slots = asyncio.Semaphore(concurrency)

    async def handle(job: JobRecord) -> tuple[JobRecord, str | None]:
        async with slots:
            try:
                await handler(job)
            except Exception as error:
                return job, f"{type(error).__name__}: {error}"
            return job, None

    while True:
        # The first claim checks batch_size and workflow_type (InvalidInput) before any work.
        jobs = await _retrying(lambda: queue.claim_many(batch_size, workflow_type))
        if not jobs:
            if until_empty:
                return stats
            await asyncio.sleep(poll_interval)
            continue
        tasks = [asyncio.ensure_future(handle(job)) for job in jobs]
        try:
            outcomes = await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            finished = [task.result() for task in tasks if task.done() and not task.cancelled()]
            await _settle(queue, finished, stats)
            settled = {job.id for job, _ in finished}
            held = [job.id for job in jobs if job.id not in settled]
            await _retrying(functools.partial(queue.release, held))
            raise
        await _settle(queue, outcomes, stats)


async def _settle(
    queue: JobQueue, outcomes: list[tuple[JobRecord, str | None]], stats: WorkerStats
) -> None:
    done = [job.id for job, error in outcomes if error is None]
    errors: dict[uuid.UUID | str, str] = {job.id: error for job, error in outcomes if error}
    stats.completed += len(await _retrying(lambda: queue.complete_many(done)))
    stats.failed += len(await _retrying(lambda: queue.fail_many(errors)))


async def _retrying(operation: Callable[[], Awaitable[T]]) -> T:
    delay = FIRST_BACKOFF_SECONDS
    for _ in range(RETRIES - 1):
        try:
            return await operation()
        except DatabaseUnavailable as error:
            log.warning("worker: database error, retrying in %.2f s: %s", delay, error)
            await asyncio.sleep(delay)
            delay *= 2
    return await operation()
