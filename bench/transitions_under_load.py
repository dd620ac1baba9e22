"""Expand/contract under load: each transition `make revision` writes, on processing_jobs'
rows, while bench/writer.py's writer inserts a job and updates a media item in a
loop (the old shape, as n8n writes it), timing every write.

For each kind, in a throwaway copy of the project: the model is edited, `make revision` writes
the expand, which is applied, rolled back (no consent) and applied again; then the marker goes,
`make revision` writes the contract, which is applied and rolled back. The writer's worst
latency per step is what n8n would feel (goal: under 250 ms, issue 33). Revisions are used as
written.

Each step starts just after a CHECKPOINT and records the WAL it wrote and the checkpoints that
ran during it: a commit waits behind a checkpoint's fsync, so a step's stall depends on how much
WAL it writes as well as on its locks. Beside the steps, the baseline of the same run: the
writer's worst latency while a plain UPDATE rewrites the rows in committed batches of 5,000 as a
backfill does, with no DDL and no trigger, pass after pass until it has written as much WAL as
the kind's heaviest step: what the server's disk and checkpoints alone cost a writer.

While an expand is in place, its sync trigger runs on every write: the writer's UPDATE rate
with the trigger enabled and disabled (`ALTER TABLE ... DISABLE TRIGGER`, interleaved rounds,
the median ratio with its spread) is its write cost (goal: at most 1.2x; pgroll measured about
4.5x on UPDATEs).

`python -m bench.transitions_under_load --size full` (1M jobs) or `--size tiny`.
"""

import argparse
import asyncio
import functools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL

from bench import interleaved
from bench.revisions_under_load import Stall, make_revision, under_load
from bench.run import SIZES, Size, scratch_database, seed_jobs
from bench.writer import JOB_INSERT
from media_db.dev import REPO_ROOT
from media_db.pool import conninfo
from media_db.settings import database_url
from media_db.transitions import BATCH
from tests.helpers import edit, project_copy

# Columns nothing else names (no index expression, no CHECK, no code but the generated
# records): a rename keeps the column's key (the name the data layer's code uses).
# processing_jobs' error_message: analysis_results has one too, without a priority before it.
PRIORITY = '    priority: Mapped[int] = mapped_column(server_default=text("5"))\n'
ERROR_MESSAGE = PRIORITY + (
    "    error_message: Mapped[str | None] = mapped_column(Text, info=SET_BY_REPOSITORY)\n"
)
RENAMED = PRIORITY + (
    '    error_message: Mapped[str | None] = mapped_column("last_error", Text, '
    'key="error_message", info={"renamed_from": "error_message", "set_by": "repository"})\n'
)
RENAME_CONTRACTED = PRIORITY + (
    '    error_message: Mapped[str | None] = mapped_column("last_error", Text, '
    'key="error_message", info=SET_BY_REPOSITORY)\n'
)
LAST_COLUMN = "    limit_key: Mapped[str | None] = mapped_column(String(50))\n"
BUDGET = (
    '    retry_budget: Mapped[int] = mapped_column(info={"backfill": "max_attempts - attempts"})\n'
)
UUID_COLUMN = (
    '    token: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))\n'
)
# The dedupe key's unique partial index travels with it (built again over the shadow).
DEDUPE_KEY = "    dedupe_key: Mapped[str | None] = mapped_column(String(200))\n"
NARROWED = (
    '    dedupe_key: Mapped[str | None] = mapped_column(String(100), info={"using": '
    '"left(dedupe_key, 100)", "down": "dedupe_key"})\n'
)
DEDUPED = "INSERT INTO processing_jobs (workflow_type, dedupe_key) VALUES ('writer', %s)"


@dataclass(frozen=True)
class Kind:
    expand: tuple[str, str]  # the models' edit
    contract: tuple[str, str] | None  # None: nothing left to contract
    old_shape: str  # what the writer inserts until the contract (n8n's SQL as it is)
    new_shape: str  # what it inserts once contracted
    fill: str | None = None  # the column's values in every seeded row, when it has any


KINDS = {
    "rename": Kind(
        (ERROR_MESSAGE, RENAMED),
        (RENAMED, RENAME_CONTRACTED),
        "INSERT INTO processing_jobs (workflow_type, error_message) VALUES ('writer', 'old')",
        "INSERT INTO processing_jobs (workflow_type, last_error) VALUES ('writer', 'new')",
        "UPDATE processing_jobs SET error_message = 'provider said: ' || id",
    ),
    "NOT NULL with a backfill": Kind(
        (LAST_COLUMN, LAST_COLUMN + BUDGET),
        (BUDGET, "    retry_budget: Mapped[int]\n"),
        JOB_INSERT,
        "INSERT INTO processing_jobs (workflow_type, retry_budget) VALUES ('writer', 5)",
    ),
    "volatile default": Kind((LAST_COLUMN, LAST_COLUMN + UUID_COLUMN), None, JOB_INSERT, ""),
    "type change": Kind(
        (DEDUPE_KEY, NARROWED),
        (NARROWED, DEDUPE_KEY.replace("200", "100")),
        DEDUPED % "gen_random_uuid()::text",
        DEDUPED % "left(gen_random_uuid()::text, 30)",
        "UPDATE processing_jobs SET dedupe_key = id::text",
    ),
}


# The baseline: the rows rewritten in committed batches as a backfill (by key order), pass
# after pass, until argv[1] bytes of WAL are written (at least one pass).
REWRITE_IN_BATCHES = f"""
import os, sys, psycopg
from sqlalchemy import make_url
from media_db.pool import conninfo
with psycopg.connect(conninfo(make_url(os.environ["DATABASE_URL"])), autocommit=True) as db:
    start = db.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    written = 0
    while written < int(sys.argv[1]) or not written:
        after = "00000000-0000-0000-0000-000000000000"
        while after is not None:
            after = db.execute(
                "WITH batch AS (SELECT id FROM processing_jobs WHERE id > %s ORDER BY id "
                "LIMIT {BATCH}), rewritten AS (UPDATE processing_jobs SET priority = priority "
                "WHERE id IN (SELECT id FROM batch)) SELECT max(id::text) FROM batch",
                (after,),
            ).fetchone()[0]
        written = db.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (start,)
        ).fetchone()[0]
"""
WRITE_SECONDS = 3.0
STALL_GOAL_MS = 250.0
TRIGGER_COST_GOAL = 1.2
timed = functools.partial(under_load, goal_ms=STALL_GOAL_MS)
SYNC_TRIGGERS = """
    SELECT tgname FROM pg_trigger WHERE tgrelid = 'processing_jobs'::regclass
      AND NOT tgisinternal AND tgname LIKE '%\\_sync'
"""


@dataclass(frozen=True)
class Step:
    stall: Stall
    wal_bytes: int
    checkpoints: int  # counted by the server during the step


CHECKPOINTS = {  # PostgreSQL 17 moved the counters to their own view
    True: "SELECT num_timed + num_requested FROM pg_stat_checkpointer",
    False: "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter",
}


async def scalar(raw: psycopg.AsyncConnection[Any], sql: str, *params: Any) -> Any:
    found = await (await raw.execute(sql, params or None)).fetchone()
    assert found is not None
    return found[0]


async def checkpoints(raw: psycopg.AsyncConnection[Any]) -> int:
    return int(await scalar(raw, CHECKPOINTS[raw.info.server_version >= 170000]))


async def step(url: URL, command: list[str], project: Path, insert: str) -> Step:
    """`command` under the writer, from a fresh checkpoint, with the WAL it brought."""
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as raw:
        earlier = await checkpoints(raw)
        await raw.execute("CHECKPOINT")  # no step pays for the WAL of the one before
        while (before := await checkpoints(raw)) == earlier:  # counted after it returns
            await asyncio.sleep(0.05)
        lsn = await scalar(raw, "SELECT pg_current_wal_lsn()")
        stall = await timed(url, command, project, insert)
        wal = await scalar(raw, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", lsn)
        return Step(stall, int(wal), await checkpoints(raw) - before)


async def baseline(url: URL, project: Path, insert: str, wal_bytes: int) -> Step:
    """The batched rewrite for as much WAL as `wal_bytes`, with no trigger of ours running."""
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as raw:
        triggers = [row[0] for row in await (await raw.execute(SYNC_TRIGGERS)).fetchall()]
        for trigger in triggers:
            await raw.execute(f"ALTER TABLE processing_jobs DISABLE TRIGGER {trigger}")
        try:
            rewrite = ["python", "-c", REWRITE_IN_BATCHES, str(wal_bytes)]
            return await step(url, rewrite, project, insert)
        finally:
            for trigger in triggers:
                await raw.execute(f"ALTER TABLE processing_jobs ENABLE TRIGGER {trigger}")


async def update_rate(raw: psycopg.AsyncConnection[Any], ids: list[Any]) -> float:
    """UPDATEs per second of one writer touching the old shape's column, by primary key."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < WRITE_SECONDS:
        await raw.execute(
            "UPDATE processing_jobs SET priority = priority WHERE id = %s", (ids[done % len(ids)],)
        )
        done += 1
    return done / (time.perf_counter() - started)


async def trigger_cost(url: URL) -> dict[str, Any] | None:
    """The writer's UPDATE rate without the sync trigger over its rate with it."""
    async with await psycopg.AsyncConnection.connect(conninfo(url), autocommit=True) as raw:
        triggers = [row[0] for row in await (await raw.execute(SYNC_TRIGGERS)).fetchall()]
        if not triggers:
            return None
        found = await raw.execute("SELECT id FROM processing_jobs LIMIT 1000")
        ids = [row[0] for row in await found.fetchall()]

        async def rate_with(verb: str) -> float:
            for trigger in triggers:
                await raw.execute(f"ALTER TABLE processing_jobs {verb} TRIGGER {trigger}")
            return await update_rate(raw, ids)

        with_, without = await interleaved(
            lambda: rate_with("ENABLE"), lambda: rate_with("DISABLE")
        )
        for trigger in triggers:
            await raw.execute(f"ALTER TABLE processing_jobs ENABLE TRIGGER {trigger}")
    ratios = [off / on for on, off in zip(with_, without, strict=True)]
    return {
        "triggers": triggers,
        "updates_per_s_with": round(statistics.median(with_)),
        "updates_per_s_without": round(statistics.median(without)),
        "slowdown": round(statistics.median(ratios), 2),
        "slowdown_spread": [round(min(ratios), 2), round(max(ratios), 2)],
        "goal_met": statistics.median(ratios) <= TRIGGER_COST_GOAL,
    }


async def prove(server: URL, size: Size, results: Path, kinds: list[str]) -> Path:
    rows: list[dict[str, Any]] = []
    upgrade, downgrade = ["alembic", "upgrade", "head"], ["alembic", "downgrade", "-1"]
    # The volatile default's values exist nowhere else: its way down asks for consent.
    consented = ["alembic", "-x", "allow-data-loss=true", "-x", "backup=skip", "downgrade", "-1"]
    with tempfile.TemporaryDirectory(prefix="bench-transitions-") as workdir:
        for kind in kinds:
            shape = KINDS[kind]
            async with scratch_database(server) as url:
                async with await psycopg.AsyncConnection.connect(conninfo(url)) as raw:
                    await seed_jobs(raw, size)  # type: ignore[arg-type]
                    if shape.fill is not None:
                        await raw.execute(shape.fill)
                        await raw.commit()
                        await raw.set_autocommit(True)
                        await raw.execute("VACUUM ANALYZE processing_jobs")
                home = Path(workdir) / kind.replace(" ", "_")
                home.mkdir()
                project = project_copy(home)
                models = project / "models" / "media.py"
                edit(models, shape.expand)
                make_revision(project, url, f"expand {kind}")
                steps = {"expand": await step(url, upgrade, project, shape.old_shape)}
                down = consented if shape.contract is None else downgrade
                steps["expand down"] = await step(url, down, project, shape.old_shape)
                steps["expand again"] = await step(url, upgrade, project, shape.old_shape)
                cost = await trigger_cost(url)
                if cost is not None:
                    print(
                        f"{kind:<26} sync trigger: {cost['updates_per_s_with']:,} updates/s with"
                        f", {cost['updates_per_s_without']:,} without: {cost['slowdown']}x "
                        f"(spread {cost['slowdown_spread']}; goal {TRIGGER_COST_GOAL}x "
                        f"{'met' if cost['goal_met'] else 'NOT met'})",
                        flush=True,
                    )
                if shape.contract is not None:
                    edit(models, shape.contract)
                    make_revision(project, url, f"contract {kind}")
                    steps["contract"] = await step(url, upgrade, project, shape.new_shape)
                    steps["contract down"] = await step(url, downgrade, project, shape.new_shape)
                heaviest = max(done.wal_bytes for done in steps.values())
                insert = shape.old_shape if shape.contract is None else shape.new_shape
                steps["baseline"] = await baseline(url, project, insert, heaviest)
                for name, done in steps.items():
                    met = done.stall.goal_met
                    verdict = f"goal {STALL_GOAL_MS:g} ms {'met' if met else 'NOT met'}"
                    print(
                        f"{kind:<26} {name:<14} {done.stall.seconds:7.2f} s, "
                        f"{done.wal_bytes / 2**20:6.0f} MB WAL, {done.checkpoints} checkpoints, "
                        f"writer max {done.stall.writer_max_ms:7.1f} ms, "
                        f"p99 {done.stall.writer_p99_ms:5.1f} ms ("
                        + ("no DDL: the server's own" if name == "baseline" else verdict)
                        + ")",
                        flush=True,
                    )
                measured = {
                    name: {
                        **asdict(done.stall),
                        "wal_bytes": done.wal_bytes,
                        "checkpoints": done.checkpoints,
                    }
                    for name, done in steps.items()
                }
                rows.append({"kind": kind, **measured, "sync_trigger_cost": cost})
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": asdict(size),
        "goal_writer_max_ms": STALL_GOAL_MS,
        "goal_sync_trigger_slowdown": TRIGGER_COST_GOAL,
        "transitions": rows,
    }
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"transitions-under-load-{size.name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {path}")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transitions_under_load")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--kind", choices=sorted(KINDS), action="append", help="(default: all)")
    options = parser.parse_args()
    kinds = options.kind or list(KINDS)
    asyncio.run(prove(database_url(), SIZES[options.size], REPO_ROOT / "results", kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
