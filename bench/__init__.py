"""`make bench`: the data layer against raw psycopg, measured in the same run."""

from collections.abc import Awaitable, Callable

ROUNDS = 5  # interleaved rounds behind every ratio: its median, with the spread
Measure = Callable[[], Awaitable[float]]


async def interleaved(
    ours: Measure, baseline: Measure, reset: Callable[[], Awaitable[object]] | None = None
) -> tuple[list[float], list[float]]:
    """Each side's measure in ROUNDS rounds, the side that goes first alternating: work that
    leaves state behind and the machine's noise hit both sides alike. `reset` runs before every
    measure, so that each starts from the same state."""
    measured: tuple[list[float], list[float]] = ([], [])
    for round_ in range(ROUNDS):
        sides = [(0, ours), (1, baseline)]
        for side, measure in sides if round_ % 2 == 0 else reversed(sides):
            if reset is not None:
                await reset()
            measured[side].append(await measure())
    return measured
