"""Expand/contract under load: each transition `make revision` writes, on processing_jobs'
rows, while bench/upgrade_under_load.py's writer inserts a job and updates a media item in a
loop (the old shape, as n8n writes it), timing every write.

For each kind, in a throwaway copy of the project: the model is edited, `make revision` writes
the expand, which is applied, rolled back (no consent) and applied again; then the marker goes,
`make revision` writes the contract, which is applied and rolled back. The writer's worst
latency per step is what n8n would feel (goal: under 250 ms, issue 33). Revisions are used as
written.

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
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL

from bench import interleaved
from bench.revisions_under_load import make_revision, under_load
from bench.run import SIZES, Size, scratch_database, seed_jobs
from media_db.dev import REPO_ROOT
from media_db.pool import conninfo
from media_db.settings import database_url
from tests.helpers import edit, project_copy

# The writer inserts jobs naming workflow_type: the old shape, all along.
WORKFLOW_TYPE = "    workflow_type: Mapped[str] = mapped_column(String(50))\n"
STARTED_AT = "    started_at: Mapped[datetime | None]\n"
RENAMED = (
    '    workflow: Mapped[str] = mapped_column(String(50), info={"renamed_from": '
    '"workflow_type"})\n'
)
BUDGET = (
    '    retry_budget: Mapped[int] = mapped_column(info={"backfill": "max_attempts - attempts"})\n'
)
UUID_COLUMN = (
    '    token: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))\n'
)
NARROWED = (
    '    workflow_type: Mapped[str] = mapped_column(String(30), info={"using": '
    '"left(workflow_type, 30)", "down": "workflow_type"})\n'
)
# Each kind: the expand's edit; the contract's (None: nothing left to contract) and the insert
# of the new shape, which every writer uses once it is contracted.
KINDS: dict[str, tuple[tuple[str, str], tuple[str, str] | None, str]] = {
    "rename": (
        (WORKFLOW_TYPE, RENAMED),
        (RENAMED, "    workflow: Mapped[str] = mapped_column(String(50))\n"),
        "INSERT INTO processing_jobs (workflow) VALUES ('writer')",
    ),
    "NOT NULL with a backfill": (
        (STARTED_AT, STARTED_AT + BUDGET),
        (BUDGET, "    retry_budget: Mapped[int]\n"),
        "INSERT INTO processing_jobs (workflow_type, retry_budget) VALUES ('writer', 5)",
    ),
    "volatile default": ((STARTED_AT, STARTED_AT + UUID_COLUMN), None, ""),
    "type change": (
        (WORKFLOW_TYPE, NARROWED),
        (NARROWED, WORKFLOW_TYPE.replace("50", "30")),
        "INSERT INTO processing_jobs (workflow_type) VALUES ('writer')",
    ),
}


WRITE_SECONDS = 3.0
STALL_GOAL_MS = 250.0
TRIGGER_COST_GOAL = 1.2
timed = functools.partial(under_load, goal_ms=STALL_GOAL_MS)
SYNC_TRIGGERS = """
    SELECT tgname FROM pg_trigger WHERE tgrelid = 'processing_jobs'::regclass
      AND NOT tgisinternal AND tgname LIKE '%\\_sync'
"""


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
            expand, contract, new_shape = KINDS[kind]
            async with scratch_database(server) as url:
                async with await psycopg.AsyncConnection.connect(conninfo(url)) as raw:
                    await seed_jobs(raw, size)  # type: ignore[arg-type]
                home = Path(workdir) / kind.replace(" ", "_")
                home.mkdir()
                project = project_copy(home)
                models = project / "models" / "media.py"
                edit(models, expand)
                make_revision(project, url, f"expand {kind}")
                steps = {"expand": await timed(url, upgrade, project)}
                down = consented if contract is None else downgrade
                steps["expand down"] = await timed(url, down, project)
                steps["expand again"] = await timed(url, upgrade, project)
                cost = await trigger_cost(url)
                if cost is not None:
                    print(
                        f"{kind:<26} sync trigger: {cost['updates_per_s_with']:,} updates/s with"
                        f", {cost['updates_per_s_without']:,} without: {cost['slowdown']}x "
                        f"(spread {cost['slowdown_spread']}; goal {TRIGGER_COST_GOAL}x "
                        f"{'met' if cost['goal_met'] else 'NOT met'})",
                        flush=True,
                    )
                if contract is not None:
                    edit(models, contract)
                    make_revision(project, url, f"contract {kind}")
                    steps["contract"] = await timed(url, upgrade, project, new_shape)
                    steps["contract down"] = await timed(url, downgrade, project, new_shape)
                for step, stall in steps.items():
                    print(
                        f"{kind:<26} {step:<14} {stall.seconds:7.2f} s, writer max "
                        f"{stall.writer_max_ms:7.1f} ms (goal {STALL_GOAL_MS:g} ms "
                        f"{'met' if stall.goal_met else 'NOT met'})",
                        flush=True,
                    )
                measured = {step: asdict(stall) for step, stall in steps.items()}
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
