"""`make sql`: the upgrade as SQL, for a reviewer, or a DBA who applies it by hand.

With a database configured (DATABASE_URL, DIRECT_DATABASE_URL or POSTGRES_*), what is pending on
it: from the revision it is at to head, read from its version table without writing anything.
With none, the whole history, base to head, no database needed. A span given (`RANGE=0001:head`)
is printed as asked, database or not.
"""

import sys

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from media_db import settings
from media_db.connect import open_connection
from media_db.deploy import project
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable


def pending_span(current: tuple[str, ...], heads: tuple[str, ...]) -> str | None:
    """The span from `current` (the database's revisions; empty: none applied) to head, or
    None when nothing is pending."""
    if set(current) == set(heads):
        return None
    if len(current) > 1:
        raise ValueError(
            f"the database is at several revisions ({', '.join(current)}): give the span, "
            "e.g. RANGE=<revision>:head"
        )
    return f"{current[0]}:head" if current else "head"


def main(argv: list[str]) -> int:
    span = argv[1] if len(argv) > 1 and argv[1] else None
    if span is None and settings.is_configured():
        heads = tuple(ScriptDirectory.from_config(project.alembic_config()).get_heads())
        try:
            with open_connection("make sql") as connection:
                current = project.current_heads(connection)
                where = settings.redacted(connection.engine.url)
        except DatabaseUnavailable as error:
            print(
                f"make sql: {error}. Nothing was printed; RANGE=base:head prints the whole "
                "history with no database.",
                file=sys.stderr,
            )
            return EXIT_UNAVAILABLE
        try:
            span = pending_span(current, heads)
        except ValueError as error:
            print(f"make sql: {error}.", file=sys.stderr)
            return 2
        at = ", ".join(current) or "no revision"
        if span is None:
            print(f"-- Nothing pending: {where} is at head ({at}).")
            return 0
        print(f"-- Pending on {where}, now at {at}: {span}.")
        return printed(span)
    return printed(span or "head", asked=span is not None)


def printed(span: str, asked: bool = False) -> int:
    """The upgrade of `span` as SQL; a span Alembic cannot walk, or one that holds no upgrade
    (`asked`: given by the user), refused in one line."""
    try:
        sql = project.offline_sql("upgrade", span)
    except CommandError as error:
        message = " ".join(str(error).split()).split(": `make history`")[0]
        print(
            f"make sql: RANGE={span}: {message}. `make history` lists the revisions.",
            file=sys.stderr,
        )
        return 2
    if asked and "Running upgrade" not in sql:
        print(
            f"make sql: RANGE={span} holds no upgrade: give the lower revision first "
            "(e.g. RANGE=0001:head).",
            file=sys.stderr,
        )
        return 2
    print(sql, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
