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
"""

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import URL

from tests import model_edits
from tests.autogen.test_expand_contract_keeps_every_writer import execute, migrate, ok
from tests.conftest import FreshDatabase
from tests.helpers import edit, environment, project_copy, run

WIDTH, HEIGHT = "    width: Mapped[int | None]\n", "    height: Mapped[int | None]\n"
WIDTH_RENAMED = (
    '    width: Mapped[int | None] = mapped_column("pixel_width", key="width", '
    'info={"renamed_from": "width"})\n'
)
HEIGHT_RENAMED = WIDTH_RENAMED.replace("width", "height").replace("pixel_height", "tall")
WIDTH_CHECK = ('CheckConstraint("width > 0"', 'CheckConstraint("pixel_width > 0"')
ASPECT = 'CheckConstraint("width <= height * 100", name="aspect")'


def widened(line: str, column: str) -> str:
    return line.replace(
        "Mapped[int | None]\n",
        f'Mapped[int | None] = mapped_column(BigInteger, info={{"using": "{column}::bigint"}})\n',
    )


def with_aspect(project: Path, url: URL) -> None:
    """A CHECK over width and height, in the models and in the database."""
    model_edits.add_table_arg(project / "models" / "media.py", "MediaItem", ASPECT)
    execute(
        url,
        "ALTER TABLE media_items ADD CONSTRAINT media_items_aspect_check "
        "CHECK (width <= height * 100)",
    )


Setup = Callable[[Path, URL], None]


def nothing(project: Path, url: URL) -> None:
    return None


def width_renamed_and_applied(project: Path, url: URL) -> None:
    with_aspect(project, url)
    models = project / "models" / "media.py"
    edit(
        models,
        (WIDTH, WIDTH_RENAMED),
        WIDTH_CHECK,
        (ASPECT, ASPECT.replace("width", "pixel_width", 1)),
    )
    ok(["make", "revision", "M=rename width"], environment(url), project)
    migrate(project, url, "upgrade", "head")


def with_width_index(project: Path, url: URL) -> None:
    """An index naming width by key: it follows whatever column the key names."""
    model_edits.add_table_arg(
        project / "models" / "media.py", "MediaItem", 'Index("idx_media_items_width", "width")'
    )
    execute(url, "CREATE INDEX idx_media_items_width ON media_items (width)")


CASES: dict[str, tuple[Setup, list[tuple[str, str]], str]] = {
    "one CHECK carried by two type changes": (
        with_aspect,
        [(WIDTH, widened(WIDTH, "width")), (HEIGHT, widened(HEIGHT, "height"))],
        "alter_column media_items.height type INTEGER to BIGINT: check "
        "media_items_aspect_check is carried by alter_column media_items.width type INTEGER "
        "to BIGINT too, in this revision",
    ),
    "a CHECK still carried by a rename in flight": (
        width_renamed_and_applied,
        [
            (HEIGHT, HEIGHT_RENAMED),
            ('CheckConstraint("height > 0"', 'CheckConstraint("tall > 0"'),
            ('"pixel_width <= height * 100"', '"pixel_width <= tall * 100"'),
        ],
        "is still carried by a transition in flight (media_items_aspect_check__old stays until "
        "its contract): contract that transition first",
    ),
    "a rename whose CHECK the models drop": (
        nothing,
        [(WIDTH, WIDTH_RENAMED), ('        CheckConstraint("width > 0", name="width"),\n', "")],
        "the models drop check media_items_width_check in the same revision: drop it in a "
        "revision of its own first",
    ),
    "a type change before another transition": (
        nothing,
        [(WIDTH, widened(WIDTH, "width")), (HEIGHT, widened(HEIGHT, "height"))],
        "alter_column media_items.width type INTEGER to BIGINT: steps after its cutover commit "
        "on their own",
    ),
    "a backfill over a column renamed with it": (
        nothing,
        [
            (WIDTH, WIDTH_RENAMED),
            WIDTH_CHECK,
            (
                HEIGHT,
                HEIGHT + '    area: Mapped[int] = mapped_column(info={"backfill": '
                '"coalesce(pixel_width * height, 0)"})\n',
            ),
        ],
        "add_column media_items.area: its backfill 'coalesce(pixel_width * height, 0)' fails on "
        'the row (column "pixel_width" does not exist)',
    ),
    "two columns swapping names": (
        with_width_index,
        [
            (
                WIDTH,
                '    width: Mapped[int | None] = mapped_column("height", key="width", '
                'info={"renamed_from": "width"})\n',
            ),
            (
                HEIGHT,
                '    height: Mapped[int | None] = mapped_column("width", key="height", '
                'info={"renamed_from": "height"})\n',
            ),
        ],
        "media_items.height: marked renamed from width, but media_items has both columns: a "
        "rename onto a column that exists (two names swapped) would put each value under the "
        "other name",
    ),
    "a backfill over a column that is not there": (
        nothing,
        [
            (
                HEIGHT,
                HEIGHT + '    area: Mapped[int] = mapped_column(info={"backfill": "widht * 2"})\n',
            )
        ],
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
