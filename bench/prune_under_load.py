"""`make bench-prune`: `JobQueue.prune` on 1M finished jobs while a writer works beside it.

A scratch database at head gets 1M finished jobs (older than the retention) and 100k queued
ones. A writer inserts a job and marks one of its own finished, in a loop (each its own
transaction: n8n's raw SQL), timing every write, while `prune` runs in batches of 10,000. The
writer's worst stall is the figure that matters (goal: under 100 ms), set beside the same
writer with no prune running.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.run import scratch_database
from media_db import Database, JobQueue, PoolSize
from media_db.dev import REPO_ROOT
from media_db.pool import conninfo
from media_db.settings import database_url

SIZES = {"full": (1_000_000, 100_000), "tiny": (20_000, 2_000)}
SEED = (
    "INSERT INTO processing_jobs (workflow_type, status, completed_at) SELECT 'old', "
    "'completed', now() - interval '30 days' FROM generate_series(1, %(finished)s)",
    "INSERT INTO processing_jobs (workflow_type) SELECT 'live' FROM generate_series(1, %(queued)s)",
)


async def write_until(url: Any, stop: asyncio.Event, latencies: list[float]) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as raw:
        while not stop.is_set():
            started = time.perf_counter()
            # By primary key, as n8n's writes are: a scan for the row would time the scan
            # (1.1M rows) rather than any wait the prune causes.
            inserted = await raw.execute(
                "INSERT INTO processing_jobs (workflow_type) VALUES ('writer') RETURNING id"
            )
            row = await inserted.fetchone()
            await raw.execute(
                "UPDATE processing_jobs SET status = 'completed', completed_at = now() "
                "WHERE id = %s",
                (row[0] if row else None,),
            )
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)


async def timed_writes(url: Any, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = asyncio.Event()
    writer = asyncio.create_task(write_until(url, stop, latencies))
    await asyncio.sleep(seconds)
    stop.set()
    await writer
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "writes": len(latencies),
        "max_ms": round(max(latencies) * 1000, 1),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
    }


async def prove(size: str, results: Path) -> Path:
    finished, queued = SIZES[size]
    async with scratch_database(database_url()) as url:
        async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as raw:
            for statement in SEED:
                await raw.execute(statement, {"finished": finished, "queued": queued})
            await raw.execute("VACUUM ANALYZE processing_jobs")
        quiet = await timed_writes(url, 5)
        latencies: list[float] = []
        stop = asyncio.Event()
        writer = asyncio.create_task(write_until(url, stop, latencies))
        async with await Database.connect(url, PoolSize(1, 2)) as db:
            started = time.perf_counter()
            deleted = await JobQueue(db).prune(timedelta(days=7))
            prune_seconds = time.perf_counter() - started
        stop.set()
        await writer
    beside = summary(latencies)
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "finished_jobs": finished,
        "deleted": deleted,
        "prune_seconds": round(prune_seconds, 2),
        "writer_alone": summary(quiet),
        "writer_beside_prune": beside,
        "goal_max_ms": 100,
        "meets_goal": beside["max_ms"] <= 100,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"prune-under-load-{size}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prune_under_load")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    asyncio.run(prove(parser.parse_args().size, REPO_ROOT / "results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
