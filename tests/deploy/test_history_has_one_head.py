"""The history stays one line: two heads, or two files with the same revision id (two branches
that each ran `make revision`), are refused by `make status` and `make verify`, naming both and
the fix; `make rebase` is that fix (the branch's revisions renumbered on top of the other head,
and the result upgrades); this project's own history is one line (CI runs this)."""

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, create_engine, pool

from media_db.deploy import history_shape
from media_db.deploy.project import VERSION_TABLE
from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for
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
            assert "`make rebase` gives its revisions the next free ids" in output
        else:
            assert f"2 heads ({NEXT_REVISION}, {LATER})" in output
            assert "`make rebase` puts its revisions on top of the other's" in output
            assert f'alembic merge -m "merge" {NEXT_REVISION} {LATER}' in output
        assert "Traceback" not in output


def test_make_rebase_puts_the_branchs_revisions_on_top_of_the_other_head(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project = project_copy(tmp_path)
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env = environment(**identity, GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

    def git(*args: str) -> None:
        done = run(["git", *args], env, cwd=project)
        assert done.returncode == 0, done.stderr

    git("init", "-q", "-b", "main")
    (project / ".git" / "info" / "exclude").write_text(".venv\n")
    git("add", "-A")
    git("commit", "-qm", "base")
    git("checkout", "-qb", "ratings")
    ours = branch(project, "add_ratings", NEXT_REVISION)
    git("add", "-A")
    git("commit", "-qm", "ratings")
    git("checkout", "-q", "main")
    theirs = branch(project, "add_captions", NEXT_REVISION)
    git("add", "-A")
    git("commit", "-qm", "captions")
    git("checkout", "-q", "ratings")
    git("merge", "-q", "--no-edit", "main")

    done = run(["make", "rebase", "ONTO=main"], env, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{NEXT_REVISION} -> {LATER} (2026_12_07_{LATER}_add_ratings.py)" in done.stdout
    versions = project / "alembic" / "versions"
    assert (versions / theirs).exists()
    assert not (versions / ours).exists()
    moved = (versions / f"2026_12_07_{LATER}_add_ratings.py").read_text()
    assert f'revision: str = "{LATER}"' in moved
    assert f'down_revision: str | None = "{NEXT_REVISION}"' in moved
    assert f"Revision ID: {LATER}\nRevises: {NEXT_REVISION}" in moved
    script = ScriptDirectory.from_config(Config(str(project / "alembic.ini")))
    assert history_shape.problems(script) == []

    url = fresh_database()
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(config_for(project, connection), "head")
        assert connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar() == (
            LATER
        )
