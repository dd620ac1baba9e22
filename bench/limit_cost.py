"""What a limit key at its limit costs the claims of the other keys (issue 36: at most 10 %).

Two workflow types, each claimed by its own scoped `claim_many(10)`, taking turns: one holds
only due jobs of a key without limits; the other the same, plus a backlog of a key at its
limit (max_running 1, one running) ranked ahead of them in claim order. Its claims must skip
that backlog; the ratio is their rate against the first's (goal: at least 0.9)."""

from typing import Any

import psycopg

from bench import ROUNDS
from media_db import Database, JobQueue, NewJob

Row = dict[str, Any]
BATCH = 10
ALONE, BEHIND = "limit-cost-alone", "limit-cost-behind"


async def limit_cost_row(
    db: Database,
    raw: psycopg.AsyncConnection[Any],
    backlog: int,
    claims: int,
    alternating_rates: Any,
    ratio_row: Any,
) -> Row:
    queue = JobQueue(db)
    operations = max(claims // BATCH, 50)
    # Every claim of the warm-up and the rounds takes BATCH jobs: enough that none comes empty.
    jobs = BATCH * (20 + ROUNDS.get() * operations) + BATCH
    for workflow in (ALONE, BEHIND):
        await queue.enqueue_many([NewJob(workflow, limit_key=f"{workflow}-free")] * jobs)
    saturated = f"{BEHIND}-saturated"
    await queue.set_limit(saturated, max_running=1)
    await queue.enqueue_many([NewJob(BEHIND, limit_key=saturated, priority=5)] * (backlog + 1))
    await queue.claim(BEHIND)  # its one running job: the key is at its limit from here on
    await raw.execute("VACUUM ANALYZE processing_jobs")

    async def vacuum() -> None:
        await raw.execute("VACUUM processing_jobs")

    async def take(workflow: str) -> None:
        if len(await queue.claim_many(BATCH, workflow)) != BATCH:
            raise RuntimeError(f"a claim of {workflow} came back short: the row measures nothing")

    alone, behind = await alternating_rates(
        operations, lambda: take(ALONE), lambda: take(BEHIND), vacuum
    )
    row: Row = ratio_row(
        f"claim {BATCH} of a key behind {backlog:,} jobs of a key at its limit (claims/s)",
        "claim_many, the saturated key's backlog ahead",
        behind,
        "the same claim, no other key",
        alone,
        0.9,
    )
    return row
