"""python -m bench [--size full|tiny] [--only "PART ..."] [--results DIR]: see bench/run.py."""

import argparse
import asyncio
import sys
from pathlib import Path

from bench.graphile_peer import GraphileUnavailable
from bench.run import PARTS, SIZES, run_and_report
from media_db.connect import DatabaseUnavailable
from media_db.dev import REPO_ROOT
from media_db.settings import DatabaseNotConfigured, database_url


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results")
    parser.add_argument(
        "--only", default="", help=f"the parts to run, space-separated, of: {' '.join(PARTS)}"
    )
    options = parser.parse_args()
    parts = tuple(part for part in PARTS if part in options.only.split()) or PARTS
    if unknown := sorted(set(options.only.split()) - set(PARTS)):
        parser.error(f"no part {', '.join(unknown)}: the parts are {', '.join(PARTS)}")
    try:
        asyncio.run(run_and_report(database_url(), SIZES[options.size], options.results, parts))
    except (DatabaseNotConfigured, DatabaseUnavailable, GraphileUnavailable) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
