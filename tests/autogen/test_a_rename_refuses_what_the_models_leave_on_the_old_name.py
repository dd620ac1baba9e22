"""A rename carries each CHECK and index the models keep to the new column, as the models
declare it. Where the models' own SQL text (a CheckConstraint, an index's WHERE) still names
the old column, that copy would stand on the old column and go with it at the contract:
`make revision` refuses, naming it and the new name to write; once the text is moved, the
expand is written.

The columns are the test's own (`probe_wide`, `probe_seen`), with their CHECK and index.
"""

from pathlib import Path

import pytest

from tests import model_edits
from tests.autogen.test_expand_contract_keeps_every_writer import execute
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run

WIDE = "probe_wide: Mapped[int | None]"
WIDE_RENAMED = (
    'probe_wide: Mapped[int | None] = mapped_column("probe_wide_x", key="probe_wide", '
    'info={"renamed_from": "probe_wide"})'
)
SEEN = "probe_seen: Mapped[datetime | None]"
SEEN_RENAMED = (
    'probe_seen: Mapped[datetime | None] = mapped_column("probe_seen_x", key="probe_seen", '
    'info={"renamed_from": "probe_seen"})'
)
CHECK = 'CheckConstraint("probe_wide > 0", name="probe_wide")'
INDEX = 'Index("idx_probe_seen", "probe_wide", postgresql_where=text("probe_seen IS NOT NULL"))'
DDL = (
    "ALTER TABLE media_items ADD COLUMN probe_wide integer, ADD COLUMN probe_seen timestamptz, "
    "ADD CONSTRAINT media_items_probe_wide_check CHECK (probe_wide > 0);"
    "CREATE INDEX idx_probe_seen ON media_items (probe_wide) WHERE probe_seen IS NOT NULL"
)
CASES = {
    "a CHECK": (
        (WIDE, WIDE_RENAMED),
        ('"probe_wide > 0"', '"probe_wide_x > 0"'),
        "add_column media_items.probe_wide_x (renamed from probe_wide): check "
        "media_items_probe_wide_check, as the models declare it, still names probe_wide, which "
        "the contract drops",
    ),
    "a partial index's WHERE": (
        (SEEN, SEEN_RENAMED),
        ('"probe_seen IS NOT NULL"', '"probe_seen_x IS NOT NULL"'),
        "add_column media_items.probe_seen_x (renamed from probe_seen): index idx_probe_seen, "
        "as the models declare it, still names probe_seen, which the contract drops",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_rename_refuses_sql_the_models_leave_on_the_old_name(
    case: str, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    renamed, moved, message = CASES[case]
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
    for source in (WIDE, SEEN):
        model_edits.add_column(models, "MediaItem", source)
    for source in (CHECK, INDEX):
        model_edits.add_table_arg(models, "MediaItem", source)
    execute(url, DDL)

    edit(models, renamed)
    made = run(["make", "revision", "M=rename"], environment(url), cwd=project)
    output = " ".join((made.stdout + made.stderr).split())
    assert made.returncode != 0, output
    assert message in output, output
    assert "write it over" in output
    assert not list((project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*"))

    edit(models, moved)  # the text over the new name: written
    made = run(["make", "revision", "M=rename"], environment(url), cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
