"""Deploy options: `-x name=value`, else the environment, else the default, each validated
before anything runs (alembic/env.py reads them first, offline runs included). OPTIONS is the
one list: `.ci/run` unsets its environment names (`python -m media_db.deploy.options`)."""

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from alembic.util import CommandError

from media_db.deploy import backup, durations


class DeployOptions(TypedDict):
    lock_wait: float
    retries: int
    backoff: float
    allow_data_loss: bool
    debug: bool
    backup: str
    backup_dir: str
    progress_interval: float
    backfill_batch: int
    backfill_pause: float
    max_replica_lag: float
    replica_lag_wait: float


@dataclass(frozen=True)
class Option:
    """One deploy option: where it is read from, what it accepts, and a value to show as example."""

    name: str  # as given with -x
    environment: str
    default: str
    kind: str  # "count", "duration" (media_db/deploy/durations.py), "switch", "choice" or "path"
    maximum: float = 0  # seconds (durations: in seconds too), or a count
    example: str = ""
    # Switches: the exact values that mean yes and no, given with -x / in the environment.
    x_values: tuple[str, str] = ("true", "false")
    environment_values: tuple[str, str] = ("1", "0")
    choices: tuple[str, ...] = ()  # "choice": the values accepted
    alias: str = ""  # an older -x spelling, still accepted
    setting: str = ""  # the session setting it sets, if any
    # Durations: the least value above 0 taken, in seconds; a smaller one is refused.
    floor: float = 0
    # Durations: 0 is accepted and means "off" (a timeout's 0 would mean "wait forever").
    zero_is_off: bool = False


# Our migration session waits at most lock_timeout for a lock (n8n's traffic queues behind any
# lock request of ours while it waits) and statement_timeout for one statement. Session settings
# of our own connection only: never server- or role-wide, the database is shared. Both must be
# bounded: 0 would mean "wait forever", which is exactly what they exist to prevent.
OPTIONS = {
    option.name: option
    for option in (
        # Spelt with hyphens like the others; the underscored PostgreSQL names stay aliases.
        Option(
            "lock-timeout",
            "MIGRATION_LOCK_TIMEOUT",
            "5s",
            "duration",
            600,
            "5s",
            alias="lock_timeout",
            setting="lock_timeout",
        ),
        Option(
            "statement-timeout",
            "MIGRATION_STATEMENT_TIMEOUT",
            "15min",
            "duration",
            86400,
            "15min",
            alias="statement_timeout",
            setting="statement_timeout",
        ),
        Option(
            "lock-wait",
            "MIGRATION_LOCK_WAIT",
            "10min",
            "duration",
            86400,
            "10min",
            zero_is_off=True,
        ),
        Option("lock-retries", "MIGRATION_LOCK_RETRIES", "3", "count", 10, "3"),
        Option(
            "lock-retry-backoff",
            "MIGRATION_LOCK_RETRY_BACKOFF",
            "2s",
            "duration",
            60,
            "2s",
            zero_is_off=True,
        ),
        Option("allow-data-loss", "ALLOW_DATA_LOSS", "", "switch", example="true"),
        Option("debug", "MIGRATION_DEBUG", "", "switch", example="true"),
        # Before a consented drop, its rows go to a file (deploy/backup.py), unless skipped.
        Option(
            "backup", "MIGRATION_BACKUP", "on", "choice", example="skip", choices=("on", "skip")
        ),
        Option(
            "backup-dir",
            "MIGRATION_BACKUP_DIR",
            backup.DEFAULT_DIRECTORY,
            "path",
            example="/var/backups/media",
        ),
        # A report costs a log line and a few catalog reads: more than two a second floods.
        Option(
            "progress-interval",
            "MIGRATION_PROGRESS_INTERVAL",
            "5s",
            "duration",
            3600,
            "5s",
            floor=0.5,
            zero_is_off=True,
        ),
        # Batched backfills (media_db/deploy/throttle.py): rows per batch (0: the revision's
        # own), a pause after each, and how far a streaming standby may fall behind.
        Option("backfill-batch", "MIGRATION_BACKFILL_BATCH", "0", "count", 1_000_000, "1000"),
        Option(
            "backfill-pause",
            "MIGRATION_BACKFILL_PAUSE",
            "0",
            "duration",
            60,
            "100ms",
            zero_is_off=True,
        ),
        # gh-ost's --max-lag-millis is 1.5 s; a shared database's own bursts lag a standby for
        # seconds, which a backfill should not wait out batch after batch.
        Option(
            "max-replica-lag",
            "MIGRATION_MAX_REPLICA_LAG",
            "5s",
            "duration",
            3600,
            "2s",
            zero_is_off=True,
        ),
        Option(
            "replica-lag-wait", "MIGRATION_REPLICA_LAG_WAIT", "10min", "duration", 86400, "30min"
        ),
    )
}
SPELLINGS = {
    spelling: option
    for option in OPTIONS.values()
    for spelling in (option.name, option.alias)
    if spelling
}
COUNT = re.compile(r"\d{1,9}", re.ASCII)


def _raw(
    option: Option, x_arguments: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[str, str | None]:
    """The value, and the name it was given under (None: the default). An empty environment
    variable counts as unset, as in a shell; an empty -x value is a mistake."""
    given = [spelling for spelling in (option.name, option.alias) if spelling in x_arguments]
    if len(given) > 1:
        raise CommandError(
            f"-x {option.name} given twice (as {' and '.join(given)}): give it once."
        )
    if given:
        return x_arguments[given[0]], f"-x {given[0]}"
    if value := environ.get(option.environment, ""):
        return value, option.environment
    return option.default, None


def _parse(option: Option, x_arguments: Mapping[str, str], environ: Mapping[str, str]) -> Any:
    value, given = _raw(option, x_arguments, environ)
    if option.kind == "switch":
        yes, no = option.environment_values if given == option.environment else option.x_values
        if value in (yes, no) or given is None:
            return value == yes
        accepted = (
            f"exactly {yes} (consent) or {no}"
            if option.name == "allow-data-loss"
            else (f"exactly {yes} or {no}")
        )
    elif option.kind == "choice":
        if value in option.choices:
            return value
        accepted = f"one of {', '.join(option.choices)}"
    elif option.kind == "path":
        if value.strip():
            return value
        accepted = "a folder"
    elif option.kind == "duration":
        amount = durations.seconds(value)
        if option.zero_is_off and (value == "0" or amount == 0):  # 0s, 0ms, 0min: off too
            return value
        if amount is not None and amount > 0 and option.floor <= amount <= option.maximum:
            return value
        least = f"from {durations.shown(option.floor)} to" if option.floor else "above 0, at most"
        accepted = durations.unit_missing(value) or (
            f"{'0 (off) or ' if option.zero_is_off else ''}a duration {least} "
            f"{durations.shown(option.maximum)} (a whole number with {durations.UNITS})"
        )
    else:
        if COUNT.fullmatch(value) and int(value) <= option.maximum:
            return int(value)
        accepted = f"a whole number from 0 to {option.maximum:,.0f}"
    good = option.environment_values[0] if option.kind == "switch" else option.example
    raise CommandError(
        f"{given}={value!r} refused: it must be {accepted}; e.g. -x {option.name}="
        f"{option.example} or {option.environment}={good}."
    )


def seconds(duration: str) -> float:
    """A validated duration ("5s", "100ms", "10min", or 0 in any unit: off) in seconds."""
    amount = durations.seconds(duration)
    assert amount is not None or duration == "0", duration  # _parse accepted it
    return amount or 0.0


def options(
    x_arguments: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> DeployOptions:
    """Every deploy option, validated before anything runs: an unknown -x name, a value of the
    wrong type, out of range or unbounded is refused in one line naming it and a good value."""
    unknown = sorted(set(x_arguments) - set(SPELLINGS))
    if unknown:
        raise CommandError(
            f"Unknown -x option {', '.join(unknown)}: use {', '.join(OPTIONS)} "
            "(e.g. -x lock-timeout=5s)."
        )
    value = {name: _parse(option, x_arguments, environ) for name, option in OPTIONS.items()}
    return {
        "lock_wait": seconds(value["lock-wait"]),
        "retries": value["lock-retries"],
        "backoff": seconds(value["lock-retry-backoff"]),
        "allow_data_loss": value["allow-data-loss"],
        "debug": value["debug"],
        "backup": value["backup"],
        "backup_dir": value["backup-dir"],
        "progress_interval": seconds(value["progress-interval"]),
        "backfill_batch": value["backfill-batch"],
        "backfill_pause": seconds(value["backfill-pause"]),
        "max_replica_lag": seconds(value["max-replica-lag"]),
        "replica_lag_wait": seconds(value["replica-lag-wait"]),
    }


def timeout_settings(x_arguments: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """`SET` statements for the migration session: `-x lock-timeout=10s`, else the environment's
    MIGRATION_LOCK_TIMEOUT (likewise statement-timeout), else the defaults."""
    return [
        f"SET {option.setting} = '{_parse(option, x_arguments, environ)}'"
        for option in OPTIONS.values()
        if option.setting
    ]


def main() -> int:
    """Print every option's environment name, one per line."""
    print("\n".join(option.environment for option in OPTIONS.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
