"""What the operator's read-only make targets share (`make limits`, `make schedules`): read over
the direct URL, then print one line per row, or JSON; an unreachable database or a failed read
is one line on stderr and exit status 3."""

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from media_db.connect import open_connection
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable

Rows = TypeVar("Rows")


def read_and_print(
    argv: list[str],
    prog: str,
    description: str,
    what: str,
    read: Callable[[Connection], Rows],
    render: Callable[[Rows], str],
    as_json: Callable[[Rows], Any],
) -> int:
    """`read` the rows (`what` names them in a failure), then print `render` of them, or
    `as_json` of them with --json."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--json", action="store_true", help="one JSON array on stdout")
    args = parser.parse_args(argv)
    try:
        connection = open_connection(what)
        with connection:
            rows = read(connection)
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    except SQLAlchemyError as error:
        orig = getattr(error, "orig", None) or error
        print(f"Cannot read the {what}: {' '.join(str(orig).split())}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(json.dumps(as_json(rows), indent=2) if args.json else render(rows))
    return 0
