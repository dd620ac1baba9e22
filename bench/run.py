"""Each row is measured against a baseline taken in the same run, on the same server:

- insert / get by id / claim / claim_many(10) / claim_many(100): the repositories vs raw
  psycopg on one connection doing the same work: the same SQL, the row fetched and the same
  record built;
- pool: psycopg_pool vs SQLAlchemy's async engine (the choice of pool), and our class-based
  `Database.connection()` vs psycopg_pool's own `connection()` (checkout + one query);
- bulk insert: MediaRepository.create_many vs a raw COPY of the same rows;
- the peer: pgqueuer 1.6 on its own schema (bench/peer.py): dequeue 1 / 10 / 100, worker loop;
- procrastinate 3.10 (bench/procrastinate_peer.py) and Graphile Worker 0.18 in a database of
  its own (bench/graphile_peer.py): worker loops;
- claim: p50/p99 latency and claims/s with 1M jobs (20 % queued), 1 and 8 workers;
- a limit key at its limit: the other keys' claims behind its backlog (bench/limit_cost.py);
- delete: one media item while 1M jobs exist;
- queue health: claim latency after 20k claims on a server with autovacuum on
  (bench/queue_health.py, an embedded PostgreSQL 18).

Everything runs in a scratch database created for the run and dropped after it, so the
configured database only lends its server.
"""

import asyncio
import json
import secrets
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from psycopg.rows import dict_row
from sqlalchemy import URL, create_engine, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import ROUNDS, interleaved
from bench.graphile_peer import graphile_rows
from bench.limit_cost import limit_cost_row
from bench.peer import peer_rows
from bench.procrastinate_peer import procrastinate_row
from bench.queue_health import queue_health_rows
from media_db import (
    Database,
    JobQueue,
    JobRecord,
    MediaRecord,
    MediaRepository,
    NewMedia,
    PoolSize,
    run_worker,
)
from media_db.deploy import project
from media_db.dev import REPO_ROOT
from media_db.pool import conninfo
from media_db.repositories import jobs as jobs_statements
from media_db.repositories import media as media_statements


@dataclass(frozen=True)
class Size:
    name: str
    single_ops: int
    bulk_rows: int
    jobs: int
    claims: int
    peer_jobs: int
    loop_jobs: int
    health_jobs: int
    health_queued: int
    health_claims: int
    health_seconds: float
    wakeups: int
    rounds: int  # interleaved rounds behind each ratio


SIZES = {
    "full": Size(
        "full",
        single_ops=2_000,
        bulk_rows=100_000,
        jobs=1_000_000,
        claims=1_000,
        peer_jobs=60_000,
        loop_jobs=20_000,
        health_jobs=200_000,
        health_queued=60_000,
        health_claims=20_000,
        health_seconds=90,
        wakeups=500,
        rounds=5,
    ),
    "tiny": Size(
        "tiny",
        single_ops=20,
        bulk_rows=200,
        jobs=2_000,
        claims=40,
        peer_jobs=2_000,
        loop_jobs=200,
        health_jobs=2_000,
        health_queued=500,
        health_claims=200,
        health_seconds=1,
        wakeups=10,
        rounds=3,  # a median still: the tiny run proves the bench runs, it measures nothing
    ),
}
Row = dict[str, Any]
WAKEUP_GOAL_MS = 5  # enqueue to handler start, p99, idle queue (issue 36)


# The parts of a run, in the order they run (`make bench ONLY="peers limits"`: those alone).
PARTS = ("data", "peers", "limits", "claims", "health")


async def run_and_report(
    server: URL, size: Size, results: Path, parts: tuple[str, ...] = PARTS
) -> Path:
    ROUNDS.set(size.rounds)
    async with scratch_database(server) as url:
        rows = await measure(url, size, parts)
        version = await server_version(url)
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": asdict(size),
        "parts": list(parts),
        "server": version,
        "git_commit": _git_commit(),
        "rows": rows,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"bench-{size.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nwritten to {path}")
    return path


async def measure(url: URL, size: Size, parts: tuple[str, ...] = PARTS) -> list[Row]:
    rows: list[Row] = []
    async with await Database.connect(url, PoolSize(2, 10)) as db:
        # Like for like: one autocommit connection, as the repositories' statements run.
        raw = await psycopg.AsyncConnection.connect(
            _conninfo(url), row_factory=dict_row, autocommit=True
        )
        async with raw:
            if "data" in parts:
                rows += [
                    await single_insert(db, raw, size),
                    await get_by_id(db, raw, size),
                    await pool_checkout(db, url, size),
                    await connection_checkout(db, size),
                    await bulk_insert(db, raw, size),
                ]
            if "peers" in parts:
                rows += await peer_rows(db, _conninfo(url), size, rates, ratio_row)
                rows.append(await procrastinate_row(db, _conninfo(url), size.loop_jobs, ratio_row))
                rows += await graphile_rows(db, url, size.loop_jobs, ratio_row)
            if "limits" in parts:
                backlog = 5 * size.claims
                rows.append(
                    await limit_cost_row(
                        db, raw, backlog, size.claims, alternating_rates, ratio_row
                    )
                )
            if "claims" in parts:
                await raw.execute("DELETE FROM processing_jobs")
                await seed_jobs(raw, size)
                rows += [await claim_vs_raw(db, raw, size, batch) for batch in (1, 10, 100)]
                rows += [await claims(db, size, workers) for workers in (1, 8)]
                rows.append(await delete_media(db, raw))
                rows.append(await enqueue_to_start(db, size))
    if "health" in parts:
        rows += await queue_health_rows(size, scratch_database)
    return rows


async def enqueue_to_start(db: Database, size: Size) -> Row:
    """From `enqueue` returning to the handler starting, on an idle queue, one job at a time:
    the wakeup's latency (the worker polls only every minute, so a poll cannot explain it)."""
    queue, started = JobQueue(db), asyncio.Queue[float]()

    async def handler(job: JobRecord) -> None:
        started.put_nowait(time.perf_counter())

    worker = asyncio.create_task(
        run_worker(db, handler, workflow_type="wakeup-probe", poll_interval=60.0)
    )
    try:
        await queue.enqueue("wakeup-probe")  # the worker is up and listening once it ran
        await asyncio.wait_for(started.get(), timeout=120)
        latencies = []
        for _ in range(size.wakeups):
            await asyncio.sleep(0.01)  # idle again: the worker waits on its LISTEN
            enqueued = time.perf_counter()
            await queue.enqueue("wakeup-probe")
            latencies.append(await asyncio.wait_for(started.get(), timeout=60) - enqueued)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    return {
        "row": f"enqueue to handler start, idle queue, {len(latencies)} jobs",
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "goal_p99_ms": WAKEUP_GOAL_MS,
        "meets_goal": p99 * 1000 <= WAKEUP_GOAL_MS,
    }


def as_records(build: Callable[[Any], Any]) -> Callable[[Any], Callable[[Any], Any]]:
    """The raw side's row factory: rows built straight into our records, as ours are."""
    return lambda _cursor: build


async def single_insert(db: Database, raw: psycopg.AsyncConnection[Row], size: Size) -> Row:
    media = MediaRepository(db)
    insert = media_statements.NEW_MEDIA.insert(("source_url", "source_type"))

    async def by_hand() -> None:
        cursor = raw.cursor(row_factory=as_records(MediaRecord.from_row))
        await cursor.execute(insert, {"source_url": "https://x/a.mp4", "source_type": "s3"})
        await cursor.fetchone()

    ours, theirs = await alternating_rates(
        size.single_ops, lambda: media.create(NewMedia("https://x/a.mp4", "s3")), by_hand
    )
    return ratio_row(
        "single-row insert",
        "MediaRepository.create",
        ours,
        "raw psycopg, same INSERT, same record",
        theirs,
        0.85,
    )


async def get_by_id(db: Database, raw: psycopg.AsyncConnection[Row], size: Size) -> Row:
    cursor = await raw.execute("SELECT id FROM media_items LIMIT 1")
    key = (await cursor.fetchone() or {})["id"]
    await raw.commit()
    media = MediaRepository(db)

    async def by_hand() -> None:
        cursor = raw.cursor(row_factory=as_records(MediaRecord.from_row))
        await cursor.execute(media_statements.GET, {"id": key})
        await cursor.fetchone()

    ours, theirs = await alternating_rates(size.single_ops, lambda: media.get(key), by_hand)
    return ratio_row(
        "get by id",
        "MediaRepository.get",
        ours,
        "raw psycopg, same SELECT, same record",
        theirs,
        0.85,
    )


async def connection_checkout(db: Database, size: Size) -> Row:
    """Does the class-based Database.connection() pay over psycopg_pool's own connection()?"""

    async def ours() -> None:
        async with db.connection() as connection:
            await connection.execute("SELECT 1")

    async def theirs() -> None:
        async with db.pool.connection() as connection:
            await connection.execute("SELECT 1")

    ours_rate, theirs_rate = await alternating_rates(size.single_ops, ours, theirs)
    return ratio_row(
        "connection() + SELECT 1",
        "Database.connection() (class)",
        ours_rate,
        "psycopg_pool connection()",
        theirs_rate,
        None,
    )


async def claim_vs_raw(
    db: Database, raw: psycopg.AsyncConnection[Row], size: Size, batch: int
) -> Row:
    """The same claim statement on one raw connection, rows built into the same records."""
    queue = JobQueue(db)
    statement = (
        jobs_statements.CLAIM_ONE[False]
        if batch == 1
        else jobs_statements.claim_many_sql(batch, False)
    )
    params = {"lease": jobs_statements.DEFAULT_LEASE}

    async def by_hand() -> None:
        cursor = raw.cursor(row_factory=as_records(JobRecord.from_row))
        await cursor.execute(statement, params)
        if batch == 1:
            await cursor.fetchone()
        else:
            await cursor.fetchall()

    async def ours() -> None:
        if batch == 1:
            await queue.claim()
        else:
            await queue.claim_many(batch)

    async def vacuum() -> None:
        # Each claim leaves a dead entry in the claim index: without VACUUM the side that runs
        # second reads the first one's (the 2.96x "win" of an earlier run was exactly that).
        await raw.execute("VACUUM processing_jobs")

    # At least 50 claims a side, the sides taking turns every few claims: each claim leaves the
    # queue's front a little further on, and a whole side's run after the other's measured
    # that drift and the machine's noise (spreads of 0.6-1.9x for claim_many(100)).
    ours_rate, theirs_rate = await alternating_rates(
        max(size.claims // batch, 50), ours, by_hand, vacuum
    )
    name = "JobQueue.claim" if batch == 1 else f"JobQueue.claim_many({batch})"
    return ratio_row(
        f"claim{'' if batch == 1 else f' {batch} at once'}, {size.jobs:,} jobs",
        name,
        ours_rate,
        "raw psycopg, same SQL, same records",
        theirs_rate,
        0.9,
    )


async def pool_checkout(db: Database, url: URL, size: Size) -> Row:
    """Why psycopg_pool: the same checkout + query through SQLAlchemy's async engine."""

    async def ours() -> None:
        async with db.transaction() as connection:
            await connection.execute("SELECT 1")

    engine = create_async_engine(url, pool_size=10, max_overflow=0, pool_pre_ping=True)
    try:

        async def theirs() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("SELECT 1"))

        ours_rate, theirs_rate = await alternating_rates(size.single_ops, ours, theirs)
        return ratio_row(
            "pool checkout + SELECT 1",
            "Database (psycopg_pool)",
            ours_rate,
            "SQLAlchemy async engine",
            theirs_rate,
            None,
        )
    finally:
        await engine.dispose()


async def bulk_insert(db: Database, raw: psycopg.AsyncConnection[Row], size: Size) -> Row:
    items = [
        NewMedia(
            f"https://x/{i}.mp4", "bulk", file_size=i, width=640, height=360, metadata={"i": i}
        )
        for i in range(size.bulk_rows)
    ]
    columns = "source_url, source_type, file_size, width, height, metadata"

    async def ours() -> float:
        started = time.perf_counter()
        await MediaRepository(db).create_many(items)
        return size.bulk_rows / (time.perf_counter() - started)

    async def theirs() -> float:
        started = time.perf_counter()
        async with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY media_items ({columns}) FROM STDIN") as copy,
        ):
            for i in range(size.bulk_rows):
                row = (f"https://x/{i}.mp4", "bulk", i, 640, 360, json.dumps({"i": i}))
                await copy.write_row(row)
        return size.bulk_rows / (time.perf_counter() - started)

    async def empty() -> None:  # each side writes into the same table
        await raw.execute("DELETE FROM media_items WHERE source_type = 'bulk'")
        await raw.execute("VACUUM media_items")

    ours_rates, theirs_rates = await interleaved(ours, theirs, empty)
    await empty()
    return ratio_row(
        f"bulk insert {size.bulk_rows:,} media items",
        "create_many (checked COPY)",
        ours_rates,
        "raw COPY",
        theirs_rates,
        0.5,
    )


async def seed_jobs(raw: psycopg.AsyncConnection[Row], size: Size) -> None:
    """size.jobs jobs over 1,000 media items, 20 % queued, the rest completed."""
    await raw.execute("""
        INSERT INTO media_items (source_url, source_type)
        SELECT 'https://x/jobs/' || i, 'jobs' FROM generate_series(1, 1000) AS i""")
    await raw.execute(
        """
        WITH items AS (SELECT array_agg(id) AS ids FROM media_items WHERE source_type = 'jobs')
        INSERT INTO processing_jobs (media_item_id, workflow_type, status, priority, created_at)
        SELECT ids[1 + i %% 1000], 'transcode',
               CASE WHEN i %% 5 = 0 THEN 'queued' ELSE 'completed' END,
               i %% 10, now() - make_interval(secs => i)
        FROM items, generate_series(1, %s) AS i""",
        (size.jobs,),
    )
    await raw.execute("ANALYZE processing_jobs")
    await raw.commit()


async def claims(db: Database, size: Size, workers: int, seconds: float = 60) -> Row:
    """Up to size.claims claims, stopping early after `seconds` (a slow, unindexed claim at
    1M jobs would otherwise take many minutes)."""
    queue = JobQueue(db)
    latencies: list[float] = []
    per_worker = size.claims // workers
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        for _ in range(per_worker):
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            await queue.claim()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "row": f"claim, {size.jobs:,} jobs (20 % queued), {workers} worker(s)",
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
        "claims_per_s": round(len(latencies) / elapsed, 1),
        "claims": len(latencies),
    }


async def delete_media(db: Database, raw: psycopg.AsyncConnection[Row]) -> Row:
    cursor = await raw.execute(
        "SELECT id FROM media_items WHERE source_type = 'jobs' ORDER BY id LIMIT 5"
    )
    keys = [row["id"] for row in await cursor.fetchall()]
    await raw.commit()
    media = MediaRepository(db)
    timings = []
    for key in keys:
        started = time.perf_counter()
        await media.delete(key)
        timings.append(time.perf_counter() - started)
    return {
        "row": "delete one media item (with its jobs) among all jobs",
        "median_ms": round(statistics.median(timings) * 1000, 3),
    }


async def rates(
    operations: int,
    ours: Callable[[], Awaitable[object]],
    baseline: Callable[[], Awaitable[object]],
    reset: Callable[[], Awaitable[object]] | None = None,
) -> tuple[list[float], list[float]]:
    """Each side's rate of `operations` calls in ROUNDS interleaved rounds (`interleaved`)."""
    return await interleaved(
        lambda: rate(operations, ours), lambda: rate(operations, baseline), reset
    )


async def alternating_rates(
    operations: int,
    ours: Callable[[], Awaitable[object]],
    baseline: Callable[[], Awaitable[object]],
    reset: Callable[[], Awaitable[object]] | None = None,
    turn: int = 5,
) -> tuple[list[float], list[float]]:
    """Like `rates`, with the sides close together: in each of ROUNDS rounds, after one
    `reset`, the two sides take turns of `turn` operations, the one that goes first
    alternating, each side's rate from its own turns. For work whose cost drifts as it runs
    (claims moving the queue's front) and for short calls, where a whole run's worth of the
    machine's noise would land on one side only (get by id: spread 0.80-1.03x in whole runs,
    0.89-0.91x in turns, same median)."""
    measured: tuple[list[float], list[float]] = ([], [])
    sides = ((0, ours), (1, baseline))
    turns = max(operations // turn, 1)
    for _ in range(min(20, operations)):  # warm caches and statement preparation
        await ours()
        await baseline()
    for _round in range(ROUNDS.get()):
        if reset is not None:
            await reset()
        spent = [0.0, 0.0]
        for turn_number in range(turns):
            for side, operation in sides if turn_number % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                for _ in range(turn):
                    await operation()
                spent[side] += time.perf_counter() - started
        for side in (0, 1):
            measured[side].append(turns * turn / spent[side])
    return measured


async def rate(operations: int, operation: Callable[[], Awaitable[object]]) -> float:
    for _ in range(min(20, operations)):  # warm caches and statement preparation
        await operation()
    started = time.perf_counter()
    for _ in range(operations):
        await operation()
    return operations / (time.perf_counter() - started)


def ratio_row(
    name: str,
    ours: str,
    ours_rates: float | list[float],
    baseline: str,
    baseline_rates: float | list[float],
    goal: float | None,
) -> Row:
    """The median of the rounds' ratios (each round's two sides ran back to back), with the
    lowest and highest as its spread."""
    mine = ours_rates if isinstance(ours_rates, list) else [ours_rates]
    theirs = baseline_rates if isinstance(baseline_rates, list) else [baseline_rates]
    ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    ratio = statistics.median(ratios)
    return {
        "row": name,
        "ours": ours,
        "ours_per_s": round(statistics.median(mine), 1),
        "baseline": baseline,
        "baseline_per_s": round(statistics.median(theirs), 1),
        "ratio": round(ratio, 3),
        "spread": [round(min(ratios), 3), round(max(ratios), 3)],
        "rounds": len(ratios),
        "goal": goal,
        "meets_goal": None if goal is None else ratio >= goal,
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"Benchmark ({report['size']['name']}) on PostgreSQL {report['server']}", ""]
    for row in report["rows"]:
        if "ratio" in row:
            verdict = (
                ""
                if row["goal"] is None
                else (f"  goal >= {row['goal']}: {'met' if row['meets_goal'] else 'NOT MET'}")
            )
            low, high = row["spread"]
            lines.append(
                f"{row['row']:<44} {row['ours_per_s']:>10,.1f}/s vs "
                f"{row['baseline_per_s']:>10,.1f}/s  = {row['ratio']:.2f}x "
                f"({low:.2f}-{high:.2f}, {row['rounds']} rounds){verdict}"
            )
        elif "goal_p99_ms" in row:
            verdict = "met" if row["meets_goal"] else "NOT MET"
            lines.append(
                f"{row['row']:<44} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
                f"  goal p99 <= {row['goal_p99_ms']} ms: {verdict}"
            )
        elif "claims_per_s" in row:
            lines.append(
                f"{row['row']:<44} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
                f"  {row['claims_per_s']:,.1f} claims/s"
            )
        elif "claim_buffers" in row:
            lines.append(
                f"{row['row']:<44} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms"
                f"  {row['claim_buffers']} buffers, {row['dead_tuples']} dead tuples, "
                f"{row['autovacuums']} autovacuums"
            )
        else:
            lines.append(f"{row['row']:<44} median {row['median_ms']:.3f} ms")
    return "\n".join(lines)


@asynccontextmanager
async def scratch_database(server: URL, revision: str = "head") -> AsyncIterator[URL]:
    name = f"media_bench_{secrets.token_hex(4)}"
    admin = create_engine(server, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name)
    try:
        migrate(url, revision)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: URL, revision: str) -> None:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        config = project.alembic_config()
        config.attributes.update(connection=connection, skip_logging_config=True)
        command.upgrade(config, revision)


async def server_version(url: URL) -> str:
    async with await psycopg.AsyncConnection.connect(_conninfo(url)) as connection:
        return str((await (await connection.execute("SHOW server_version")).fetchone() or [""])[0])


def _conninfo(url: URL) -> str:
    return conninfo(url.update_query_dict({"application_name": "media-analysis-bench"}))


def _git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"
