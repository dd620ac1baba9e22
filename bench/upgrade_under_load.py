"""`make bench-upgrade`: the hardening revisions applied to a busy 1M-job database (then, in
bench/revisions_under_load.py, each kind of revision `make revision` writes, and in
bench/transitions_under_load.py each expand/contract transition with its sync trigger's cost).

A scratch database at revision 0001 gets 1M jobs (20 % queued). Claim latency and media-item
delete time are measured; then `alembic upgrade head` runs while a writer inserts a job and
updates a media item in a loop, each its own transaction, timing every write; then the same
measurements again. The writer's worst latency is the figure that matters for n8n: every
lock a revision takes shows up there.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import revisions_under_load, transitions_under_load
from bench.run import SIZES, Size, claims, delete_media, migrate, scratch_database, seed_jobs
from bench.writer import write_until
from media_db.dev import REPO_ROOT
from media_db.pool import Database, PoolSize, conninfo
from media_db.repositories.jobs import CLAIM_ONE, DEFAULT_LEASE
from media_db.settings import database_url


async def prove(size: Size, results: Path) -> Path:
    async with scratch_database(database_url(), revision="0001") as url:
        async with await psycopg.AsyncConnection.connect(conninfo(url)) as raw:
            await seed_jobs(raw, size)  # type: ignore[arg-type]
        # The data layer claims with head's columns: at 0001 only the delete is comparable.
        before = await measure(url, size, with_claims=False)
        writer_latencies: list[float] = []
        stop = asyncio.Event()
        writer = asyncio.create_task(write_until(url, stop, writer_latencies))
        started = time.perf_counter()
        await asyncio.to_thread(migrate, url, "head")
        upgrade_seconds = time.perf_counter() - started
        stop.set()
        await writer
        after = await measure(url, size)
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": asdict(size),
        "upgrade_seconds": round(upgrade_seconds, 2),
        "writer": {
            "writes": len(writer_latencies),
            "max_ms": round(max(writer_latencies) * 1000, 1),
            "p99_ms": round(statistics.quantiles(writer_latencies, n=100)[98] * 1000, 1),
        },
        "before": before,
        "after": after,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"upgrade-under-load-{size.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return path


async def measure(url: Any, size: Size, with_claims: bool = True) -> list[dict[str, Any]]:
    async with await Database.connect(url, PoolSize(2, 10)) as db:
        rows = [await claims(db, size, 1)] if with_claims else []
        async with await psycopg.AsyncConnection.connect(
            conninfo(url), row_factory=psycopg.rows.dict_row
        ) as raw:
            if with_claims:
                rows.append(await claim_in_server(raw))
            rows.append(await delete_media(db, raw))
    return rows


async def claim_in_server(raw: psycopg.AsyncConnection[Any], runs: int = 50) -> dict[str, Any]:
    """The claim as the server runs it (EXPLAIN ANALYZE, rolled back): no client, no network."""
    times, buffers = [], []
    for _ in range(runs):
        cursor = await raw.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_ONE[False], {"lease": DEFAULT_LEASE}
        )
        row = await cursor.fetchone()
        await raw.rollback()
        plan = row["QUERY PLAN"][0] if row else {}
        times.append(plan["Execution Time"])
        buffers.append(plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"])
    cuts = statistics.quantiles(times, n=100)
    return {
        "row": "claim, server execution (EXPLAIN ANALYZE)",
        "p50_ms": round(cuts[49], 3),
        "p99_ms": round(cuts[98], 3),
        "buffers_p50": statistics.median(buffers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upgrade_under_load")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--part",
        choices=["hardening", "revisions", "transitions", "all"],
        default="all",
        help="the hardening revisions 0002-0007, what `make revision` writes, its "
        "expand/contract transitions, or all",
    )
    options = parser.parse_args()
    size, results = SIZES[options.size], REPO_ROOT / "results"
    if options.part in ("hardening", "all"):
        asyncio.run(prove(size, results))
    if options.part in ("revisions", "all"):
        asyncio.run(revisions_under_load.prove(database_url(), size, results))
    if options.part in ("transitions", "all"):
        kinds = list(transitions_under_load.KINDS)
        asyncio.run(transitions_under_load.prove(database_url(), size, results, kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
