"""`make db-check`: the seed plan's connection check, through the application's own pool, and
the server's major against the majors the test matrix proves (`make test-matrix`)."""

import asyncio
import re
import sys

from media_db import settings
from media_db.deploy.project import OLDEST_MAJOR, TESTED_MAJORS
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable
from media_db.pool import Database


def major_of(version: str) -> int:
    """`SHOW server_version` → major: '13.22 (Debian 13.22-0+deb11u1)' → 13, '19beta1' → 19."""
    leading = re.match(r"\d+", version)
    if leading is None:
        raise ValueError(f"not a PostgreSQL version: {version!r}")
    return int(leading.group())


def untested_warning(version: str) -> str | None:
    major = major_of(version)
    if major in TESTED_MAJORS:
        return None
    tested = ", ".join(str(m) for m in TESTED_MAJORS)
    refused = (
        f" and refuse it ({OLDEST_MAJOR} or newer is required)" if major < OLDEST_MAJOR else ""
    )
    return (
        f"WARNING: PostgreSQL {major} is outside the tested majors ({tested}): the migrations "
        f"have not been proven on it{refused}."
    )


async def check() -> tuple[str, str]:
    async with await Database.connect(application_name="media-analysis-db-check") as database:
        version = await database.server_version()
        return version, f"PostgreSQL {version} at {settings.redacted(database.url)}"


def main() -> int:
    try:
        version, description = asyncio.run(check())
    except DatabaseUnavailable as error:
        print(f"Database connection failed: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("Database connection successful")
    print(description)
    print(f"Server major: {major_of(version)}")
    warning = untested_warning(version)
    if warning:
        print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
