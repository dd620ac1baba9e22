"""python -m tests.runtime.worker_process URL OUT APPLICATION_NAME [HANG_WITH_LEASE_SECONDS]: one
worker process for the tests. Drains the queue with run_worker and appends each job id it
handles to OUT; jobs of priority 0 fail on purpose. With HANG_WITH_LEASE_SECONDS its handlers
never return and it leases for that long: a worker to kill while it holds its jobs."""

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import make_url

from media_db import Database, JobRecord, PoolSize, run_worker


async def main(url: str, out: Path, application_name: str, hang_lease: float | None) -> None:
    async with await Database.connect(
        make_url(url), PoolSize(1, 4), application_name=application_name
    ) as db:
        with out.open("a") as handled:

            async def handler(job: JobRecord) -> None:
                handled.write(f"{job.id}\n")
                handled.flush()
                if hang_lease is not None:
                    await asyncio.Event().wait()
                await asyncio.sleep(0.002)  # the batch is held a while: terminations land mid-batch
                if job.priority == 0:
                    raise RuntimeError("priority 0 fails on purpose")

            # A lease far longer than the database errors a worker rides out, so no live
            # handler's job is taken from it; the jobs of a claim whose reply was lost come
            # back once it expires.
            stats = await run_worker(
                db,
                handler,
                batch_size=10,
                concurrency=5,
                until_empty=True,
                lease=timedelta(seconds=hang_lease or 15),
            )
    print(f"completed={stats.completed} failed={stats.failed}")


if __name__ == "__main__":
    hang = float(sys.argv[4]) if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], hang))
