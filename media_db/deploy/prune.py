"""`make prune` (`python -m media_db.deploy.prune`): the retention policy, applied in batches.

Finished jobs (completed, cancelled, failed) go once they finished longer ago than
MEDIA_DB_PRUNE_JOBS_AFTER (default 7d); finished analysis results once created longer ago than
MEDIA_DB_PRUNE_RESULTS_AFTER (default: kept, as results are what the API serves). Each batch
of PRUNE_BATCH rows is its own short transaction and skips rows another session holds, so a
writer never waits for more than one batch. Progress is printed per batch.

Exit status: 0 done, 2 a bad setting, 3 the database cannot be reached.
"""

import asyncio
import os
import sys
from collections.abc import Mapping
from datetime import timedelta

from media_db import AnalysisRepository, Database, JobQueue
from media_db.deploy import durations
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable

POLICY = {
    "processing_jobs": ("MEDIA_DB_PRUNE_JOBS_AFTER", "7d"),
    "analysis_results": ("MEDIA_DB_PRUNE_RESULTS_AFTER", "keep"),
}


class BadSetting(ValueError):
    pass


def retention(environ: Mapping[str, str]) -> dict[str, tuple[timedelta, str] | None]:
    """Per table, how long finished rows are kept, and as given (None: forever)."""
    kept: dict[str, tuple[timedelta, str] | None] = {}
    for table, (variable, default) in POLICY.items():
        value = environ.get(variable) or default
        if value == "keep":
            kept[table] = None
            continue
        amount = durations.seconds(value)
        if not amount:
            what = durations.unit_missing(value) or f"a duration above 0 ({durations.UNITS})"
            raise BadSetting(f"{variable}={value!r} refused: it must be {what}, e.g. 7d, or keep")
        kept[table] = (timedelta(seconds=amount), value)
    return kept


async def prune(kept: Mapping[str, tuple[timedelta, str] | None]) -> list[str]:
    async with await Database.connect(application_name="media-analysis-prune") as db:
        removers = {
            "processing_jobs": JobQueue(db).prune,
            "analysis_results": AnalysisRepository(db).prune,
        }
        lines = []
        for table, policy in kept.items():
            if policy is None:
                lines.append(f"{table}: kept (no retention set)")
                continue

            def report(total: int, table: str = table) -> None:
                print(f"  {table}: {total:,} rows deleted so far", flush=True)

            older_than, shown = policy
            deleted = await removers[table](older_than, progress=report)
            lines.append(f"{table}: {deleted:,} finished rows older than {shown} deleted")
        return lines


def main() -> int:
    try:
        kept = retention(os.environ)
        lines = asyncio.run(prune(kept))
    except BadSetting as error:
        print(error, file=sys.stderr)
        return 2
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
