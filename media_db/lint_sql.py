"""`make lint-sql`: squawk over the offline SQL of every revision, upgrade and downgrade.

Each revision's SQL is generated on its own (`alembic upgrade prev:rev --sql`, and the reverse)
into .local/sql/ and linted by squawk with every rule on, except the exclusions below: each is
scoped to the files it concerns and says why. Non-zero exit on any finding.
"""

import io
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from media_db.local_server import REPO_ROOT

OUT = REPO_ROOT / ".local" / "sql"
PG_VERSION = "13"  # the oldest server we support (revision 0001 refuses older ones)

# A downgrade removes what its upgrade added; dropping is its job. (Tables holding rows are
# the operator's call: see the rollback runbook.)
DOWNGRADE = {
    "ban-drop-table": "a downgrade drops the tables its upgrade created",
    "ban-drop-constraint": "a downgrade drops the constraints its upgrade added",
    "ban-drop-function": "a downgrade drops the function its upgrade created",
    "ban-drop-not-null": "0005's downgrade undoes its SET NOT NULL",
}
EXCLUSIONS: dict[str, dict[str, str]] = {
    "0001_upgrade": {
        "prefer-text-field": "0001 is the seed plan's schema, VARCHAR(n) included, by design",
        "prefer-bigint-over-int": "0001 is the seed plan's schema, INTEGER included, by design",
    },
    "0005_upgrade": {
        "adding-not-nullable-field": "no scan: a CHECK (status IS NOT NULL) validated in 0004 "
        "proves the column, which squawk cannot see across revisions",
        "ban-drop-constraint": "drops 0002's helper CHECK, redundant once the column is NOT NULL",
    },
}


def offline_sql(direction: str, span: str) -> str:
    """What `alembic <direction> <span> --sql` prints."""
    buffer = io.StringIO()
    config = Config(str(REPO_ROOT / "alembic.ini"), output_buffer=buffer)
    config.attributes["skip_logging_config"] = True
    getattr(command, direction)(config, span, sql=True)
    return buffer.getvalue()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    files = []
    script = ScriptDirectory.from_config(Config(str(REPO_ROOT / "alembic.ini")))
    for revision in reversed(list(script.walk_revisions())):
        previous = revision.down_revision
        assert previous is None or isinstance(previous, str), "merge revisions: lint by hand"
        span = f"{previous}:{revision.revision}" if previous else revision.revision
        up = OUT / f"{revision.revision}_upgrade.sql"
        up.write_text(offline_sql("upgrade", span))
        down = OUT / f"{revision.revision}_downgrade.sql"
        down.write_text(offline_sql("downgrade", f"{revision.revision}:{previous or 'base'}"))
        files += [up, down]
    squawk = Path(sys.executable).parent / "squawk"
    failed = 0
    for path in files:
        excluded = EXCLUSIONS.get(path.stem, DOWNGRADE if path.stem.endswith("_downgrade") else {})
        options = [f"--exclude={rule}" for rule in excluded]
        result = subprocess.run(
            [str(squawk), f"--pg-version={PG_VERSION}", *options, str(path)], check=False
        )
        failed |= result.returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
