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
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from media_db import migrations
from media_db.connect import DatabaseUnavailable, open_connection
from media_db.local_server import REPO_ROOT
from media_db.verify import drift_from
from models import Base

BASELINE = "0001"
TRANSACTION_CONTROL = re.compile(r"^(BEGIN|COMMIT);$", re.MULTILINE)


def baseline_sql() -> str:
    """Revision 0001 as offline SQL, without its BEGIN/COMMIT (the caller's transaction holds)."""
    buffer = io.StringIO()
    config = Config(str(REPO_ROOT / "alembic.ini"), output_buffer=buffer)
    config.attributes["skip_logging_config"] = True
    command.upgrade(config, BASELINE, sql=True)
    return TRANSACTION_CONTROL.sub("", buffer.getvalue())


def adopt(connection: Connection) -> tuple[bool, list[str]]:
    """(stamped, what differs)."""
    context = MigrationContext.configure(
        connection, opts={"version_table": migrations.VERSION_TABLE}
    )
    if current := context.get_current_heads():
        return False, [f"already managed by Alembic, at revision {', '.join(current)}"]
    present = [
        name
        for name in Base.metadata.tables
        if connection.scalar(text("SELECT to_regclass(:t)"), {"t": name}) is not None
    ]
    connection.rollback()
    if not present:
        return False, ["none of our tables exist: `make upgrade` builds the schema"]
    sql = baseline_sql()
    differences = drift_from(connection, lambda scratch: scratch.exec_driver_sql(sql))
    if differences:
        return False, differences
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes.update(connection=connection, skip_logging_config=True)
    command.stamp(config, BASELINE)
    return True, []


def main() -> int:
    try:
        connection = open_connection("adopt")
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return 1
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
