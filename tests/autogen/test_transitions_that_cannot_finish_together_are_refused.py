"""What expand/contract cannot write safely in one revision is refused by `make revision`, naming
what to do instead, and nothing is written (each was written before, and failed on apply or
lost a CHECK without a word):

- a CHECK over two columns that two transitions would carry (each copy is named for one);
- a second transition of a column while a CHECK it shares is still carried by one in flight;
- a rename whose CHECK the models drop in the same revision;
- a type change followed by steps that commit on their own (a failure there would leave the
  column cut over, which a re-run cannot finish);
- a backfill over a column the same revision renames (its trigger may run before the
  rename's), or a column that does not exist;
- a rename onto a column the table has (two names swapped), which wrote no expand while the
  data layer put each value under the other name.

The columns are the test's own (`probe_wide`, with a CHECK and an index, and `probe_tall`).
"""

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import URL

from tests import model_edits
from tests.autogen.test_expand_contract_keeps_every_writer import execute, migrate, ok
from tests.conftest import FreshDatabase
from tests.helpers import edit, environment, project_copy, run

WIDE, TALL = "probe_wide: Mapped[int | None]", "probe_tall: Mapped[int | None]"
WIDE_RENAMED = (
    'probe_wide: Mapped[int | None] = mapped_column("pixel_wide", key="probe_wide", '
    'info={"renamed_from": "probe_wide"})'
)
TALL_RENAMED = WIDE_RENAMED.replace("probe_wide", "probe_tall").replace("pixel_wide", "tall")
WIDE_CHECK = ('"probe_wide > 0"', '"pixel_wide > 0"')
ASPECT = 'CheckConstraint("probe_wide <= probe_tall * 100", name="aspect")'


def widened(line: str, column: str) -> str:
    return line.replace(
        "Mapped[int | None]",
        f'Mapped[int | None] = mapped_column(BigInteger, info={{"using": "{column}::bigint"}})',
    )


def probes(project: Path, url: URL) -> None:
    """The test's own columns, probe_wide with a CHECK and an index, and probe_tall."""
    models = project / "models" / "media.py"
    for source in (WIDE, TALL):
        model_edits.add_column(models, "MediaItem", source)
    for source in (
        'CheckConstraint("probe_wide > 0", name="probe_wide")',
        'Index("idx_probe_wide", "probe_wide")',
    ):
        model_edits.add_table_arg(models, "MediaItem", source)
    execute(
        url,
        "ALTER TABLE media_items ADD COLUMN probe_wide integer, ADD COLUMN probe_tall integer, "
        "ADD CONSTRAINT media_items_probe_wide_check CHECK (probe_wide > 0);"
        "CREATE INDEX idx_probe_wide ON media_items (probe_wide)",
    )


def with_aspect(project: Path, url: URL) -> None:
    """A CHECK over both probe columns, in the models and in the database."""
    probes(project, url)
    model_edits.add_table_arg(project / "models" / "media.py", "MediaItem", ASPECT)
    execute(
        url,
        "ALTER TABLE media_items ADD CONSTRAINT media_items_aspect_check "
        "CHECK (probe_wide <= probe_tall * 100)",
    )


Setup = Callable[[Path, URL], None]


def wide_renamed_and_applied(project: Path, url: URL) -> None:
    with_aspect(project, url)
    models = project / "models" / "media.py"
    edit(
        models,
        (WIDE, WIDE_RENAMED),
        WIDE_CHECK,
        ('"probe_wide <= probe_tall * 100"', '"pixel_wide <= probe_tall * 100"'),
    )
    ok(["make", "revision", "M=rename probe_wide"], environment(url), project)
    migrate(project, url, "upgrade", "head")


CASES: dict[str, tuple[Setup, list[tuple[str, str]], str]] = {
    "one CHECK carried by two type changes": (
        with_aspect,
        [(WIDE, widened(WIDE, "probe_wide")), (TALL, widened(TALL, "probe_tall"))],
        "alter_column media_items.probe_tall type INTEGER to BIGINT: check "
        "media_items_aspect_check is carried by alter_column media_items.probe_wide type "
        "INTEGER to BIGINT too, in this revision",
    ),
    "a CHECK still carried by a rename in flight": (
        wide_renamed_and_applied,
        [
            (TALL, TALL_RENAMED),
            ('"pixel_wide <= probe_tall * 100"', '"pixel_wide <= tall * 100"'),
        ],
        "is still carried by a transition in flight (media_items_aspect_check__old stays until "
        "its contract): contract that transition first",
    ),
    "a rename whose CHECK the models drop": (
        probes,
        [(WIDE, WIDE_RENAMED), ('CheckConstraint("probe_wide > 0", name="probe_wide"),', "")],
        "the models drop check media_items_probe_wide_check in the same revision: drop it in a "
        "revision of its own first",
    ),
    "a type change before another transition": (
        probes,
        [(WIDE, widened(WIDE, "probe_wide")), (TALL, widened(TALL, "probe_tall"))],
        "alter_column media_items.probe_wide type INTEGER to BIGINT: steps after its cutover "
        "commit on their own",
    ),
    "a backfill over a column renamed with it": (
        probes,
        [
            (WIDE, WIDE_RENAMED),
            WIDE_CHECK,
            (
                TALL,
                TALL + '\n    area: Mapped[int] = mapped_column(info={"backfill": '
                '"coalesce(pixel_wide * probe_tall, 0)"})',
            ),
        ],
        "add_column media_items.area: its backfill 'coalesce(pixel_wide * probe_tall, 0)' fails "
        'on the row (column "pixel_wide" does not exist)',
    ),
    "two columns swapping names": (
        probes,
        [
            (
                WIDE,
                'probe_wide: Mapped[int | None] = mapped_column("probe_tall", key="probe_wide", '
                'info={"renamed_from": "probe_wide"})',
            ),
            (
                TALL,
                'probe_tall: Mapped[int | None] = mapped_column("probe_wide", key="probe_tall", '
                'info={"renamed_from": "probe_tall"})',
            ),
        ],
        "media_items.probe_tall: marked renamed from probe_wide, but media_items has both "
        "columns: a rename onto a column that exists (two names swapped) would put each value "
        "under the other name",
    ),
    "a backfill over a column that is not there": (
        probes,
        [(TALL, TALL + '\n    area: Mapped[int] = mapped_column(info={"backfill": "widht * 2"})')],
        "its backfill 'widht * 2' fails on the row (column \"widht\" does not exist)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transitions_that_cannot_finish_together_are_refused(
    case: str, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    setup, edits, message = CASES[case]
    project, url = project_copy(tmp_path), head_copy()
    setup(project, url)
    written = sorted((project / "alembic" / "versions").glob("*.py"))
    edit(project / "models" / "media.py", *edits)
    made = run(["make", "revision", f"M={case}"], environment(url), cwd=project)
    output = " ".join((made.stdout + made.stderr).split())
    assert made.returncode != 0, output
    assert message in output, output
    assert sorted((project / "alembic" / "versions").glob("*.py")) == written
