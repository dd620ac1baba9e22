"""The future-change workflow, end to end in a throwaway copy of the project: add a column to a
model, `make revision` writes exactly that operation (nothing about other tables, no phantom
changes), and the revision upgrades and downgrades."""

import re
import shutil
from pathlib import Path

from sqlalchemy import URL, create_engine, pool, text

from tests.conftest import FreshDatabase
from tests.helpers import REPO_ROOT, environment, run

COPIED = ["alembic.ini", "alembic", "models", "media_db", "Makefile", "pyproject.toml", "uv.lock"]


def project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy / name)
    (copy / ".venv").symlink_to(REPO_ROOT / ".venv")
    return copy


def test_make_revision_writes_exactly_the_added_column(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), fresh_database()
    env = environment(url)
    assert run(["make", "-C", str(project), "upgrade"], env).returncode == 0

    models = project / "models" / "media.py"
    source = models.read_text()
    anchor = "    local_path: Mapped[str | None] = mapped_column(Text)\n"
    models.write_text(
        source.replace(
            anchor, anchor + "    thumbnail_path: Mapped[str | None] = mapped_column(Text)\n", 1
        )
    )

    made = run(["make", "-C", str(project), "revision", "M=add thumbnail path"], env)
    assert made.returncode == 0, made.stdout + made.stderr
    [revision] = (project / "alembic" / "versions").glob("*_0008_add_thumbnail_path.py")
    body = revision.read_text()
    operations = re.findall(r"op\.\w+\(.*", body)
    assert operations == [
        'op.add_column("media_items", sa.Column("thumbnail_path", sa.Text(), nullable=True))',
        'op.drop_column("media_items", "thumbnail_path")',
    ]
    assert "import models" not in body
    assert "from models" not in body

    assert run(["make", "-C", str(project), "upgrade"], env).returncode == 0
    assert column_exists(url)
    assert run(["make", "-C", str(project), "verify"], env).returncode == 0
    assert run(["make", "-C", str(project), "downgrade"], env).returncode == 0
    assert not column_exists(url)


def column_exists(url: URL) -> bool:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return bool(
            connection.scalar(
                text(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'media_items' AND column_name = 'thumbnail_path'"
                )
            )
        )


def test_make_revision_with_nothing_to_do_writes_nothing(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project, env = project_copy(tmp_path), environment(fresh_database())
    assert run(["make", "-C", str(project), "upgrade"], env).returncode == 0
    made = run(["make", "-C", str(project), "revision", "M=nothing"], env)
    assert made.returncode != 0
    assert "no revision written" in made.stdout + made.stderr
    assert not list((project / "alembic" / "versions").glob("*_0008_*"))
