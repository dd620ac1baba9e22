"""A squashed history: a baseline revision stands for the revisions up to its own id.

`make squash UPTO=<id>` (media_db/dev/squash.py) writes a baseline that builds, in one step,
the schema the revisions base..UPTO built, and gives it UPTO's own id. So a database already at
UPTO or past it (mid expand/contract included) reads the same id in its version table and goes
on upgrading, with no stamp; the revision after UPTO keeps its `down_revision`. The baseline
lists what it replaces (`replaces = (...)`), whose files move to alembic/versions_archive/:
Alembic never loads that folder (it is no version location), and `make status` still checks a
database's recorded checksums against them.

A baseline has no downgrade: what it replaces would have to be undone one by one. A downgrade
that would go below it is refused before any step runs.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic.runtime.migration import RevisionStep
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from media_db.deploy import history, history_shape, project

ARCHIVE = "versions_archive"  # beside alembic/versions/
# The baseline's downgrade raises this too (offline, `--sql`, where no plan is checked first).
BELOW_BASELINE = (
    "Refusing to downgrade below {revision}: it is a baseline that replaced {first}..{revision} "
    "(`make squash`) and has no downgrade. Nothing was changed. REV={revision} is as low as "
    "this history goes; to go lower, run the downgrade from a checkout before the squash "
    "(`git log -- alembic/{archive}` names its commit)."
)


def archive_folder() -> Path:
    return project.folder() / "alembic" / ARCHIVE


def archived_checksums(folder: Path | None = None) -> dict[str, frozenset[str]]:
    """The checksum of each archived file, by revision id (an id squashed twice has two files:
    the revision, and the earlier baseline that took its id)."""
    found: dict[str, set[str]] = {}
    for path in sorted((folder or archive_folder()).glob("*.py")):
        if match := history_shape.REVISION_LINE.search(path.read_text()):
            found.setdefault(match[1], set()).add(history.checksum(path))
    return {revision: frozenset(sums) for revision, sums in found.items()}


def replaces(script: Script) -> tuple[str, ...]:
    """The revisions `script` stands for, if it is a baseline (empty otherwise)."""
    return tuple(getattr(script.module, "replaces", ()))


def below_baseline(script: Script) -> str:
    replaced = replaces(script)
    return BELOW_BASELINE.format(revision=script.revision, first=replaced[0], archive=ARCHIVE)


def refuse_going_below(steps: Sequence[Any]) -> None:
    """Before any step runs: a downgrade whose plan undoes a baseline is refused, so it never
    stops half-way down, at the baseline."""
    for step in steps:
        if isinstance(step, RevisionStep) and not step.is_upgrade and replaces(step.revision):
            raise CommandError(below_baseline(step.revision))


def replaced_by(revision: str, script: ScriptDirectory) -> Script | None:
    """The baseline that replaced `revision` (no longer loaded), if one did."""
    for found in script.walk_revisions():
        if revision in replaces(found) and revision != found.revision:
            return found
    return None


def refuse_replaced_current(current: Sequence[str], script: ScriptDirectory) -> None:
    """A database still at a revision a baseline replaced (it was not past UPTO when the
    history was squashed) is told how to get past it, rather than Alembic's "Can't locate"."""
    for revision in current:
        if (baseline := replaced_by(revision, script)) is not None:
            raise CommandError(
                f"The database is at {revision}, which the baseline {baseline.revision} "
                f"replaced (`make squash`): upgrade it to {baseline.revision} from a checkout "
                "before the squash, then run this again. Nothing was changed."
            )
