"""Our queue against pgqueuer 1.6 (a peer Python queue on PostgreSQL), in the same run and the
same database, each on its own schema and a queue of the same size: single dequeue, batches of
10 and 100, and a whole worker loop (claim, run a no-op handler, mark done) at the same batch
size and concurrency."""

import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
from pgqueuer.db import PsycopgDriver
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import EntrypointExecutionParameter, Queries
from pgqueuer.types import QueueExecutionMode

from bench import enqueue_loop_jobs, interleaved
from media_db import Database, JobQueue, JobRecord, run_worker

Row = dict[str, Any]
ENTRYPOINT = "bench"
LOOP_BATCH, LOOP_CONCURRENCY = 10, 10


async def peer_rows(
    db: Database, conninfo: str, size: Any, rates: Any, ratio_row: Any
) -> list[Row]:
    connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    async with connection:
        queries = Queries(PsycopgDriver(connection))
        await queries.install()
        queue = JobQueue(db)
        await fill(queue, queries, size.peer_jobs, connection)
        manager_id = uuid.uuid4()
        entrypoints = {ENTRYPOINT: EntrypointExecutionParameter(concurrency_limit=0)}

        rows = []
        for batch, operations in (
            (1, size.claims),
            (10, size.claims // 5),
            (100, size.claims // 30),
        ):

            async def ours(batch: int = batch) -> None:
                if batch == 1:
                    await queue.claim()
                else:
                    await queue.claim_many(batch)

            async def theirs(batch: int = batch) -> None:
                await queries.dequeue(
                    batch_size=batch,
                    entrypoints=entrypoints,  # type: ignore[arg-type]
                    queue_manager_id=manager_id,  # type: ignore[arg-type]
                    global_concurrency_limit=None,
                    heartbeat_timeout=timedelta(seconds=30),
                )

            ours_rates, theirs_rates = await rates(max(operations, 5), ours, theirs)
            rows.append(
                ratio_row(
                    f"dequeue, batch {batch} (jobs/s)",
                    "JobQueue.claim" if batch == 1 else f"JobQueue.claim_many({batch})",
                    [rate * batch for rate in ours_rates],
                    "pgqueuer Queries.dequeue",
                    [rate * batch for rate in theirs_rates],
                    None,
                )
            )
        rows.append(await worker_loops(db, queue, queries, connection, size.loop_jobs, ratio_row))
    return rows


async def fill(
    queue: JobQueue, queries: Queries, jobs: int, connection: psycopg.AsyncConnection[Any]
) -> None:
    """`jobs` new ones in each queue, both tables then vacuumed and analyzed, as autovacuum
    would have done on a user's server before a worker gets to them. The machine's service runs
    with autovacuum off: without this both sides plan their claims from the statistics of an
    empty table (ours then sorted every queued job on each claim: 4.1 ms a round instead of
    1.2 ms at 20,000 jobs, measured)."""
    await enqueue_loop_jobs(queue, ENTRYPOINT, jobs)
    await queries.enqueue([ENTRYPOINT] * jobs, [None] * jobs, [0] * jobs)
    for table in ("processing_jobs", "pgqueuer"):
        await connection.execute(f"VACUUM ANALYZE {table}")


async def worker_loops(
    db: Database,
    queue: JobQueue,
    queries: Queries,
    connection: psycopg.AsyncConnection[Any],
    jobs: int,
    ratio_row: Any,
) -> Row:
    """Before each drain both queues get `jobs` new ones, each drained by a whole worker loop,
    in interleaved rounds."""

    # Each side's drain is timed to its last handler call, not to its worker's return:
    # pgqueuer's manager in drain mode returns about 4 s after it ran its last job (measured
    # at 200 jobs as at 20,000), which is no work a user waits for.
    last_call = [0.0]

    async def handler(job: JobRecord) -> None:
        last_call[0] = time.perf_counter()

    async def ours() -> float:
        started = time.perf_counter()
        stats = await run_worker(
            db,
            handler,
            workflow_type=ENTRYPOINT,
            batch_size=LOOP_BATCH,
            concurrency=LOOP_CONCURRENCY,
            until_empty=True,
        )
        return stats.completed / (last_call[0] - started)

    async def theirs() -> float:
        # A manager per round: one that has drained once stays shut down, and a later run
        # returns at once (that measured 20,000 "jobs" in a second, none of them run).
        manager, ran = QueueManager(queries), [0]

        @manager.entrypoint(ENTRYPOINT)
        async def peer_handler(job: Job) -> None:
            ran[0] += 1
            last_call[0] = time.perf_counter()

        started = time.perf_counter()
        await manager.run(
            batch_size=LOOP_BATCH,
            mode=QueueExecutionMode.drain,
            max_concurrent_tasks=2 * LOOP_CONCURRENCY,  # its minimum for this batch size
            dequeue_timeout=timedelta(seconds=0.1),
        )
        if ran[0] != jobs:
            raise RuntimeError(f"pgqueuer ran {ran[0]:,} of {jobs:,} jobs: not a drain")
        return jobs / (last_call[0] - started)

    async def refill() -> None:
        await connection.execute("DELETE FROM pgqueuer")
        await connection.execute("DELETE FROM processing_jobs")
        await fill(queue, queries, jobs, connection)

    measured = await interleaved(ours, theirs, refill)
    left = await (await connection.execute("SELECT count(*) FROM pgqueuer")).fetchone()
    row: Row = ratio_row(
        f"worker loop, {jobs:,} jobs, batch {LOOP_BATCH}, concurrency {LOOP_CONCURRENCY} (jobs/s)",
        "run_worker (dedupe, limits, leases, retries, wakeup on)",
        measured[0],
        "pgqueuer QueueManager",
        measured[1],
        3.0,
    )
    return row | {"peer_jobs_left": left[0] if left else None}
