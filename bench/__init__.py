"""`make bench`: the data layer against raw psycopg, measured in the same run."""

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar

from media_db import JobQueue, NewJob

# Interleaved rounds behind every ratio (its median, with the spread): the run's size sets them
# (bench/run.py), so that the tiny run the suite makes stays short.
ROUNDS: ContextVar[int] = ContextVar("ROUNDS", default=5)
Measure = Callable[[], Awaitable[float]]


async def interleaved(
    ours: Measure, baseline: Measure, reset: Callable[[], Awaitable[object]] | None = None
) -> tuple[list[float], list[float]]:
    """Each side's measure in ROUNDS rounds, the side that goes first alternating: work that
    leaves state behind and the machine's noise hit both sides alike. `reset` runs before every
    measure, so that each starts from the same state."""
    mine, theirs = await interleaved_all([ours, baseline], reset)
    return mine, theirs


async def interleaved_all(
    measures: Sequence[Measure], reset: Callable[[], Awaitable[object]] | None = None
) -> list[list[float]]:
    """`interleaved` for any number of sides: each round runs every side once, the order
    rotated by one each round, so each side goes first as often as the others."""
    measured: list[list[float]] = [[] for _ in measures]
    for round_ in range(ROUNDS.get()):
        start = round_ % len(measures)
        for side in [*range(start, len(measures)), *range(start)]:
            if reset is not None:
                await reset()
            measured[side].append(await measures[side]())
    return measured


# The worker-loop rows run our queue with what the goals name on: every job has a
# dedupe key (the live-key index is written on insert and on every claim and completion) and
# its key a limit (each claim calls processing_limits_room() under the key's advisory lock).
# The limit never binds: no worker of the bench holds that many jobs.
LOOP_MAX_RUNNING = 1_000


async def enqueue_loop_jobs(queue: JobQueue, workflow_type: str, jobs: int) -> None:
    """`jobs` no-op jobs of `workflow_type`, each with its own dedupe key, their key limited."""
    await queue.set_limit(workflow_type, max_running=LOOP_MAX_RUNNING)
    await queue.enqueue_many([NewJob(workflow_type, dedupe_key=f"bench-{i}") for i in range(jobs)])
