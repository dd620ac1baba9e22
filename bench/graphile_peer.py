"""Our worker loop against Graphile Worker 0.18 (Node.js, pinned in bench/graphile/), in the
same run on the same server: Graphile in a database of its own, created for the run and dropped
after it. At each concurrency, three sides drain `jobs` no-op jobs in interleaved rounds (the
order rotating): ours (batch = concurrency, dedupe, limits and leases on), Graphile batched (a
local queue of concurrency + 1, completions batched: its performance guide's setting) and
Graphile unbatched (its defaults). Each Graphile round is one `node drain.mjs` process, which
fills its queue and then times its drain alone (Node's start is not counted)."""

import asyncio
import functools
import json
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL

from bench import enqueue_loop_jobs, interleaved_all
from media_db import Database, JobQueue, JobRecord, run_worker
from media_db.pool import conninfo

Row = dict[str, Any]
HERE = Path(__file__).parent / "graphile"
WORKFLOW = "bench-graphile"
CONCURRENCIES = (10, 50)
MODES = ("batched", "unbatched")


class GraphileUnavailable(RuntimeError):
    """Node.js, npm or the pinned Graphile Worker could not be had (the message says how)."""


def install() -> None:
    """bench/graphile/install.sh: idempotent; names the missing tool and how to install it."""
    result = subprocess.run(
        ["bash", str(HERE / "install.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        last = lines[-1].removeprefix("bench: ") if lines else "bench/graphile/install.sh failed"
        raise GraphileUnavailable(last)


async def graphile_rows(db: Database, url: URL, jobs: int, ratio_row: Any) -> list[Row]:
    install()
    queue = JobQueue(db)

    async def handler(job: JobRecord) -> None:
        return None

    rows: list[Row] = []
    async with graphile_database(url) as graphile_url:
        for concurrency in CONCURRENCIES:

            async def ours(concurrency: int = concurrency) -> float:
                await _refill(db, queue, jobs)
                started = time.perf_counter()
                stats = await run_worker(
                    db,
                    handler,
                    workflow_type=WORKFLOW,
                    batch_size=concurrency,
                    concurrency=concurrency,
                    until_empty=True,
                )
                if stats.completed != jobs:
                    raise RuntimeError(f"ours ran {stats.completed:,} of {jobs:,} jobs")
                return jobs / (time.perf_counter() - started)

            measured = await interleaved_all(
                [
                    ours,
                    *(
                        functools.partial(drain, graphile_url, jobs, concurrency, mode)
                        for mode in MODES
                    ),
                ]
            )
            for mode, theirs in zip(MODES, measured[1:], strict=True):
                rows.append(
                    ratio_row(
                        f"worker loop vs Graphile {mode}, {jobs:,} jobs, concurrency "
                        f"{concurrency} (jobs/s)",
                        f"run_worker, batch {concurrency} (dedupe, limits, leases on)",
                        measured[0],
                        f"Graphile Worker 0.18, {mode}",
                        theirs,
                        1.0 if mode == "batched" else None,
                    )
                )
    return rows


async def _refill(db: Database, queue: JobQueue, jobs: int) -> None:
    """`jobs` new ones in place of the last round's (Graphile deletes its finished jobs), then
    VACUUM ANALYZE, as drain.mjs does: the machine's server runs without autovacuum."""
    async with db.connection() as connection:
        await connection.execute("DELETE FROM processing_jobs WHERE workflow_type = %s", [WORKFLOW])
    await enqueue_loop_jobs(queue, WORKFLOW, jobs)
    async with db.connection() as connection:
        await connection.execute("VACUUM ANALYZE processing_jobs")


async def drain(url: URL, jobs: int, concurrency: int, mode: str) -> float:
    """One Graphile round: its jobs/s, as drain.mjs timed it."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "drain.mjs"),
        str(jobs),
        str(concurrency),
        mode,
        cwd=HERE,
        # The URL through the environment only: never in argv, never printed.
        env={**os.environ, "GRAPHILE_DATABASE_URL": _libpq_url(url)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"graphile drain failed: {detail[-1] if detail else process.returncode}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["jobs_per_s"])


@asynccontextmanager
async def graphile_database(url: URL) -> AsyncIterator[URL]:
    """A database of Graphile's own on the same server; dropped after."""
    name = f"{url.database}_graphile_{secrets.token_hex(2)}"
    admin = conninfo(url)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as connection:
        await connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name)
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as connection:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq_url(url: URL) -> str:
    """node-postgres takes a postgresql:// URL (not a libpq key=value string)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
