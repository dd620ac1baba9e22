"""`make db-check`: the seed plan's connection check, with the server version."""

import sys

from sqlalchemy import text

from media_db import settings
from media_db.connect import DatabaseUnavailable, open_connection


def main() -> int:
    try:
        with open_connection("db-check") as connection:
            version = connection.scalar(text("SHOW server_version"))
            url = connection.engine.url
    except DatabaseUnavailable as error:
        print(f"Database connection failed: {error}", file=sys.stderr)
        return 1
    print("Database connection successful")
    print(f"PostgreSQL {version} at {settings.redacted(url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
