"""`make adopt`: bring a database built by hand with the seed plan's SQL under Alembic.

Such a database has our three tables but no version table. Its catalog is compared, object by
object, with what revision 0001 builds (0001's own offline SQL, run in a scratch schema inside
a transaction that is rolled back). Identical: it is stamped at 0001, and `make upgrade` takes
it from there. Any difference: each one is listed and nothing is changed.
"""

import io
import re
import sys

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from media_db.connect import open_connection
from media_db.deploy import project, squashed
from media_db.deploy.verify import drift_from
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable
from media_db.models import Base

BASELINE = "0001"
TRANSACTION_CONTROL = re.compile(r"^(BEGIN|COMMIT);$", re.MULTILINE)


def baseline_sql() -> str:
    """Revision 0001 as offline SQL, without its BEGIN/COMMIT (the caller's transaction holds)."""
    buffer = io.StringIO()
    config = project.alembic_config(output_buffer=buffer)
    config.attributes["skip_logging_config"] = True
    command.upgrade(config, BASELINE, sql=True)
    return TRANSACTION_CONTROL.sub("", buffer.getvalue())


def adopt(connection: Connection) -> tuple[bool, list[str]]:
    """(stamped, what differs)."""
    if current := project.current_heads(connection):
        return False, [f"already managed by Alembic, at revision {', '.join(current)}"]
    present = [
        name
        for name in Base.metadata.tables
        if connection.scalar(text("SELECT to_regclass(:t)"), {"t": name}) is not None
    ]
    connection.rollback()
    if not present:
        return False, ["none of our tables exist: `make upgrade` builds the schema"]
    script = ScriptDirectory.from_config(project.alembic_config())
    if (baseline := squashed.replaced_by(BASELINE, script)) is not None:
        return False, [
            f"revision {BASELINE} is no longer loaded: the baseline {baseline.revision} replaced "
            "it (`make squash`); adopt from a checkout before the squash, then `make upgrade`"
        ]
    sql = baseline_sql()
    differences = drift_from(connection, lambda scratch: scratch.exec_driver_sql(sql))
    if differences:
        return False, differences
    config = project.alembic_config()
    config.attributes.update(connection=connection, skip_logging_config=True)
    command.stamp(config, BASELINE)
    return True, []


def main() -> int:
    try:
        connection = open_connection("adopt")
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    with connection:
        stamped, findings = adopt(connection)
    if stamped:
        print(
            f"Adopted: the live schema matches revision {BASELINE} object by object; stamped "
            f"{BASELINE}. Run `make upgrade` for the later revisions."
        )
        return 0
    print("Not adopted, nothing changed:", *findings, sep="\n  ", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
