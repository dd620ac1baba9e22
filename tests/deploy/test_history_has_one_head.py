"""The history stays one line: two heads, or two files with the same revision id (two branches
that each ran `make revision`), are refused by `make status` and `make verify`, naming both and
the fix; this project's own history is one line (CI runs this)."""

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import URL

from media_db.deploy import history_shape
from tests.helpers import HEAD, NEXT_REVISION, alembic_config, environment, project_copy, run

BRANCH_REVISION = '''"""{message}.

Why: a branch's own change.

Revision ID: {revision}
Revises: {down}
Create Date: 2026-12-07
"""

revision: str = "{revision}"
down_revision: str | None = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''
LATER = f"{int(NEXT_REVISION) + 1:04d}"


def test_this_projects_history_is_one_line() -> None:
    assert history_shape.problems(ScriptDirectory.from_config(alembic_config())) == []


def branch(project: Path, name: str, revision: str) -> str:
    path = project / "alembic" / "versions" / f"2026_12_07_{revision}_{name}.py"
    path.write_text(BRANCH_REVISION.format(message=name, revision=revision, down=HEAD))
    return path.name


@pytest.mark.parametrize("same_id", [True, False], ids=["same id", "two heads"])
def test_two_branches_revisions_are_refused_naming_both(
    tmp_path: Path, migrated: URL, same_id: bool
) -> None:
    project = project_copy(tmp_path)
    first = branch(project, "add_captions", NEXT_REVISION)
    second = branch(project, "add_ratings", NEXT_REVISION if same_id else LATER)
    env = environment(migrated)

    status = run(["python", "-m", "media_db.deploy.status"], env, cwd=project)
    verify = run(["make", "verify"], env, cwd=project)

    for done in (status, verify):
        output = " ".join((done.stdout + done.stderr).split())  # status wraps its lines
        assert done.returncode == 1 if done is status else done.returncode != 0, output
        if same_id:
            assert f"revision {NEXT_REVISION} is in 2 files ({first}, {second})" in output
            assert "give the later branch's revision the next free id" in output
        else:
            assert f"2 heads ({NEXT_REVISION}, {LATER})" in output
            assert f'alembic merge -m "merge" {NEXT_REVISION} {LATER}' in output
        assert "Traceback" not in output
