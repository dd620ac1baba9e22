"""`make lint-sql`: squawk over the offline SQL of every revision, upgrade and downgrade.

Each revision's SQL is generated on its own (`alembic upgrade prev:rev --sql`, and the reverse)
into .local/sql/ and linted by squawk with every rule on, except:

- the project's stance (PROJECT_STANCE below), the same for every file;
- the waivers a revision declares for the findings it makes on purpose: `lint_waivers =
  {"upgrade" | "downgrade": {rule: why}}`, written by `make revision` for its own safe forms and
  by hand for anything else, with the reason next to the code that causes the finding;
- for revisions 0001-0007, written before waivers moved into the revisions (and never edited
  since they landed), the exclusions kept here in LANDED_BEFORE_WAIVERS.

Each file checked is named; findings print in squawk's terminal style on a terminal, else one
plain line each. Non-zero exit on any finding.
"""

import subprocess
import sys
from pathlib import Path
from types import ModuleType

from alembic.script import ScriptDirectory

from media_db.deploy import landed, project, squashed
from media_db.dev import REPO_ROOT

OUT = REPO_ROOT / ".local" / "sql"

PROJECT_STANCE = {
    # The models keep the plan's VARCHAR(n): the lengths are the data layer's input limits.
    # Widening one (or varchar -> text) is a catalog change with no rewrite since PostgreSQL
    # 9.2; `make revision` lets only such changes through and refuses rewriting ones.
    "prefer-text-field": "String(n) in the models; only binary-compatible changes are written",
    # INTEGER columns hold counts and sizes in range, not ids: every primary key is a UUID.
    "prefer-bigint-over-int": "integers are counts and sizes; ids are UUIDs",
}


def waived(module: ModuleType, revision: str, direction: str) -> dict[str, str]:
    """Every rule not applied to this revision's SQL in this direction, with why."""
    # landed.py speaks of the revisions a baseline replaced, not of the baseline with that id.
    replaced = bool(getattr(module, "replaces", ()))
    return {
        **PROJECT_STANCE,
        **({} if replaced else landed.LINT_WAIVERS.get(f"{revision}_{direction}", {})),
        **getattr(module, "lint_waivers", {}).get(direction, {}),
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    script = ScriptDirectory.from_config(project.alembic_config())
    squawk = Path(sys.executable).parent / "squawk"
    reporter = "tty" if sys.stdout.isatty() else "gcc"
    failed = 0
    for revision in reversed(list(script.walk_revisions())):
        previous = revision.down_revision
        assert previous is None or isinstance(previous, str), "merge revisions: lint by hand"
        spans = {
            "upgrade": f"{previous}:{revision.revision}" if previous else revision.revision,
            "downgrade": f"{revision.revision}:{previous or 'base'}",
        }
        if squashed.replaces(revision):  # a baseline has no downgrade: it refuses
            del spans["downgrade"]
        for direction, span in spans.items():
            path = OUT / f"{revision.revision}_{direction}.sql"
            path.write_text(project.offline_sql(direction, span))
            rules = waived(revision.module, revision.revision, direction)
            print(f"squawk {path.relative_to(REPO_ROOT)} ({len(rules)} rules waived)", flush=True)
            result = subprocess.run(
                [
                    str(squawk),
                    f"--pg-version={project.OLDEST_MAJOR}",
                    f"--reporter={reporter}",
                    *(f"--exclude={rule}" for rule in rules),
                    str(path),
                ],
                check=False,
            )
            failed |= result.returncode
    print("lint-sql: " + ("findings above" if failed else "no findings"))
    return failed


if __name__ == "__main__":
    sys.exit(main())
