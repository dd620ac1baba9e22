"""The writer the upgrade, revisions and transitions benches run beside their DDL, as n8n
writes: a job inserted and a media item updated, each its own autocommit statement, in a loop,
every round timed (bench/prune_under_load.py has its own, by primary key)."""

import asyncio
import time
from typing import Any

import psycopg

from media_db.pool import conninfo

JOB_INSERT = "INSERT INTO processing_jobs (workflow_type) VALUES ('writer')"


async def write_until(
    url: Any, stop: asyncio.Event, latencies: list[float], insert: str = JOB_INSERT
) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as raw:
        while not stop.is_set():
            started = time.perf_counter()
            await raw.execute(insert)
            await raw.execute(
                "UPDATE media_items SET local_path = 'w' WHERE id = "
                "(SELECT id FROM media_items ORDER BY id LIMIT 1)"
            )
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
