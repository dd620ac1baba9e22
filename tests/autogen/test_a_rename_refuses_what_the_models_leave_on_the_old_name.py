"""A rename carries each CHECK and index the models keep to the new column, as the models
declare it. Where the models' own SQL text (a CheckConstraint, an index's WHERE) still names
the old column, that copy would stand on the old column and go with it at the contract:
`make revision` refuses, naming it and the new name to write; once the text is moved, the
expand is written."""

from pathlib import Path

import pytest

from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run

WIDTH = "    width: Mapped[int | None]\n"
WIDTH_RENAMED = (
    '    width: Mapped[int | None] = mapped_column("width_x", key="width", '
    'info={"renamed_from": "width"})\n'
)
STARTED = "    started_at: Mapped[datetime | None] = mapped_column(info=SET_BY_REPOSITORY)\n"
STARTED_RENAMED = (
    '    started_at: Mapped[datetime | None] = mapped_column("started_x", key="started_at", '
    'info={"renamed_from": "started_at", "set_by": "repository"})\n'
)
CASES = {
    "a CHECK": (
        (WIDTH, WIDTH_RENAMED),
        ('CheckConstraint("width > 0"', 'CheckConstraint("width_x > 0"'),
        "add_column media_items.width_x (renamed from width): check media_items_width_check, "
        "as the models declare it, still names width, which the contract drops",
    ),
    "a partial index's WHERE": (
        (STARTED, STARTED_RENAMED),
        ('text("started_at IS NOT NULL")', 'text("started_x IS NOT NULL")'),
        "add_column processing_jobs.started_x (renamed from started_at): index "
        "idx_processing_jobs_started_by_limit_key, as the models declare it, still names "
        "started_at, which the contract drops",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_rename_refuses_sql_the_models_leave_on_the_old_name(
    case: str, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    renamed, moved, message = CASES[case]
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
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
