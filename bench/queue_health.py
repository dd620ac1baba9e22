"""Claim latency after many claims, on a server with autovacuum ON: an embedded PostgreSQL 18
started in a temporary folder for this (the machine's service runs with autovacuum off, where
per-table settings change nothing). Four runs, each on a fresh database: default autovacuum
settings or per-table ones on processing_jobs, with or without a transaction held open in
another session (another database of the same server).

Each claim leaves a dead entry in the partial claim index; until VACUUM removes them, the next
claims step over them. The claims are paced to last longer than autovacuum's naptime (60 s by
default), so autovacuum gets its chance as it would in production.
"""

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL

from media_db import Database, JobQueue, PoolSize
from media_db.dev.embedded import LocalServer
from media_db.pool import conninfo
from media_db.repositories.jobs import CLAIM_ONE, DEFAULT_LEASE

Row = dict[str, Any]
# The candidate per-table settings (the default scale factor 0.2 waits for 20 % of the table).
TUNED = {"autovacuum_vacuum_scale_factor": "0.01", "autovacuum_vacuum_threshold": "1000"}


async def queue_health_rows(size: Any, scratch_database: Any) -> list[Row]:
    server = LocalServer(home=Path(tempfile.mkdtemp(prefix="media-bench-")) / "postgres")
    server.ensure_running()
    try:
        rows = []
        for tuned in (False, True):
            for held_open in (False, True):
                async with scratch_database(server.url("postgres")) as url:
                    rows.append(await one_run(url, server.url("postgres"), size, tuned, held_open))
        return rows
    finally:
        server.destroy()


async def one_run(url: URL, other: URL, size: Any, tuned: bool, held_open: bool) -> Row:
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as admin:
        await admin.execute(
            """INSERT INTO processing_jobs (workflow_type, status, priority, created_at)
               SELECT 'transcode', CASE WHEN i <= %(queued)s THEN 'queued' ELSE 'completed' END,
                      i %% 10, now() - make_interval(secs => i)
               FROM generate_series(1, %(jobs)s) AS i""",
            {"queued": size.health_queued, "jobs": size.health_jobs},
        )
        if tuned:
            settings = ", ".join(f"{key} = {value}" for key, value in TUNED.items())
            await admin.execute(f"ALTER TABLE processing_jobs SET ({settings})")
        await admin.execute("VACUUM ANALYZE processing_jobs")
        holder = await psycopg.AsyncConnection.connect(conninfo(other))
        try:
            if held_open:
                await holder.execute("SELECT txid_current()")  # an xid: holds back the horizon
            latencies = await paced_claims(url, size.health_claims, size.health_seconds)
        finally:
            await holder.close()
        buffers = await claim_buffers(admin)
        cursor = await admin.execute(
            "SELECT n_dead_tup, autovacuum_count FROM pg_stat_user_tables "
            "WHERE relname = 'processing_jobs'"
        )
        dead, autovacuums = await cursor.fetchone() or (None, None)
    last = latencies[-min(1000, len(latencies)) :]
    cuts = statistics.quantiles(last, n=100)
    return {
        "row": (
            f"claim after {size.health_claims:,} claims, autovacuum "
            f"{'per-table' if tuned else 'default'}, "
            f"{'a transaction held open elsewhere' if held_open else 'no open transaction'}"
        ),
        "autovacuum_settings": TUNED if tuned else "server defaults",
        "transaction_held_open": held_open,
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "claim_buffers": buffers,
        "dead_tuples": dead,
        "autovacuums": autovacuums,
    }


async def paced_claims(url: URL, claims: int, seconds: float) -> list[float]:
    """`claims` claims, each completed, spread evenly over `seconds`; the claims' latencies."""
    latencies = []
    async with await Database.connect(url, PoolSize(1, 2)) as db:
        queue = JobQueue(db)
        interval, started = seconds / claims, time.perf_counter()
        for n in range(claims):
            await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
            before = time.perf_counter()
            job = await queue.claim()
            latencies.append(time.perf_counter() - before)
            if job is not None:
                await queue.complete(job.id)
    return latencies


async def claim_buffers(admin: psycopg.AsyncConnection[Any]) -> int:
    """Buffers the next claim touches, as the server counts them (run and rolled back)."""
    async with admin.transaction(force_rollback=True):
        cursor = await admin.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_ONE[False], {"lease": DEFAULT_LEASE}
        )
        row = await cursor.fetchone()
    plan = row[0][0]["Plan"] if row else {}
    return int(plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0))
