"""The worker loop against procrastinate 3.10 (benchmark-only dependency), on a schema of its
own in the same scratch database: both drain the same number of no-op jobs, ROUNDS rounds, the
one that goes first alternating."""

import time
from typing import Any

import psycopg
from procrastinate import App, PsycopgConnector

from bench import interleaved
from media_db import Database, JobQueue, JobRecord, NewJob, run_worker

Row = dict[str, Any]
SCHEMA, QUEUE = "procrastinate", "bench"
CONCURRENCY = 10


async def procrastinate_row(db: Database, conninfo: str, jobs: int, ratio_row: Any) -> Row:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    app = App(
        connector=PsycopgConnector(
            conninfo=conninfo, kwargs={"options": f"-c search_path={SCHEMA}"}
        )
    )

    @app.task(queue=QUEUE, name="noop")
    async def noop() -> None:
        return None

    queue = JobQueue(db)

    async def handler(job: JobRecord) -> None:
        return None

    async def ours() -> float:
        await queue.enqueue_many([NewJob(QUEUE) for _ in range(jobs)])
        started = time.perf_counter()
        stats = await run_worker(
            db, handler, workflow_type=QUEUE, concurrency=CONCURRENCY, until_empty=True
        )
        return stats.completed / (time.perf_counter() - started)

    async def theirs() -> float:
        await noop.batch_defer_async(*({} for _ in range(jobs)))
        started = time.perf_counter()
        await app.run_worker_async(queues=[QUEUE], concurrency=CONCURRENCY, wait=False)
        return jobs / (time.perf_counter() - started)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        measured = await interleaved(ours, theirs)
    row: Row = ratio_row(
        f"worker loop, {jobs:,} jobs, concurrency {CONCURRENCY} (jobs/s)",
        "run_worker (leases, retries, wakeup on)",
        measured[0],
        "procrastinate worker",
        measured[1],
        1.0,
    )
    return row
