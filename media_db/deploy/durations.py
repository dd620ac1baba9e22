"""One way to write a duration in every setting: a whole number and its unit, ms, s, min, h or d
("500ms", "5s", "10min", "7d"), as PostgreSQL spells them. A bare number is refused wherever one
is read, naming the unit to add: MIGRATION_LOCK_TIMEOUT=5 once meant 5 ms while
MIGRATION_LOCK_WAIT=600 meant seconds. A bare 0 stays where a setting can be off."""

import re

# ASCII digits only: \d alone also takes digits of other scripts, which the server refuses late.
DURATION = re.compile(r"(\d{1,12})(ms|s|min|h|d)", re.ASCII)
UNIT_SECONDS = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
UNITS = "ms, s, min, h or d"


def seconds(duration: str) -> float | None:
    """The duration in seconds, or None when `duration` is not one."""
    match = DURATION.fullmatch(duration)
    return None if match is None else int(match[1]) * UNIT_SECONDS[match[2]]


def unit_missing(value: str) -> str | None:
    """For a bare number (but 0), what it must be instead."""
    if value.isascii() and re.fullmatch(r"\d+(\.\d+)?", value) and float(value) != 0:
        return f"a duration with its unit ({UNITS}), not a bare number (which unit?)"
    return None


def shown(amount: float) -> str:
    """`amount` seconds in the largest unit that writes it whole."""
    for unit in ("d", "h", "min", "s"):
        if amount >= UNIT_SECONDS[unit] and (amount / UNIT_SECONDS[unit]).is_integer():
            return f"{amount / UNIT_SECONDS[unit]:g}{unit}"
    return f"{amount * 1000:g}ms"
