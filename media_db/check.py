"""`make db-check`: the seed plan's connection check, through the application's own pool."""

import asyncio
import sys

from media_db import settings
from media_db.connect import DatabaseUnavailable
from media_db.pool import Database


async def check() -> str:
    async with await Database.connect(application_name="media-analysis-db-check") as database:
        version = await database.server_version()
        return f"PostgreSQL {version} at {settings.redacted(database.url)}"


def main() -> int:
    try:
        description = asyncio.run(check())
    except DatabaseUnavailable as error:
        print(f"Database connection failed: {error}", file=sys.stderr)
        return 1
    print("Database connection successful")
    print(description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
