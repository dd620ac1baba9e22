"""A revision written by `make revision` that fails half-way, after some of its steps committed
on their own (a new column, a NOT VALID constraint, an INVALID index), finishes when run again
once the cause is fixed: no DuplicateObject wedge, no INVALID index kept, `make verify` clean.
Its way down, cut after its first step committed, finishes too."""

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool, text

from media_db.deploy.project import VERSION_TABLE
from tests import model_edits
from tests.conftest import FreshDatabase
from tests.helpers import HEAD, alembic_config, edit, environment, project_copy, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

MIME_TYPE = "    mime_type: Mapped[str | None] = mapped_column(String(100))\n"


def table_arg(source: str, *imports: str) -> Callable[[Path], None]:
    def apply(models: Path) -> None:
        for line in imports:
            model_edits.add_import(models, line)
        model_edits.add_table_arg(models, "MediaItem", source)

    return apply


def with_a_new_column(models: Path) -> None:
    """A CHECK and a column of the same revision: the column is committed before the CHECK's
    VALIDATE fails, and is there when the revision runs again."""
    table_arg('CheckConstraint("width <= 100000", name="max_width")')(models)
    model_edits.add_column(models, "MediaItem", "probe_codec: Mapped[str | None]")


CASES = {
    "check constraint": (
        with_a_new_column,
        "INSERT INTO media_items (source_url, source_type, width) VALUES ('u', 't', 200000)",
        "media_items_max_width_check",
        "UPDATE media_items SET width = 1000",
    ),
    "unique constraint": (
        table_arg('UniqueConstraint("local_path")', "from sqlalchemy import UniqueConstraint"),
        "INSERT INTO media_items (source_url, source_type, local_path) "
        "VALUES ('u', 't', '/same'), ('v', 't', '/same')",
        "media_items_local_path_key",
        "UPDATE media_items SET local_path = source_url",
    ),
    "set not null": (
        lambda models: edit(models, (MIME_TYPE, MIME_TYPE.replace("str | None", "str"))),
        "INSERT INTO media_items (source_url, source_type) VALUES ('u', 't')",
        "media_items_mime_type_not_null_check",
        "UPDATE media_items SET mime_type = 'video/mp4'",
    ),
}


def sql(url: URL, statement: str) -> None:
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text(statement))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_failed_half_way_then_run_again_finishes(
    case: str, tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    change, bad_rows, constraint, fix = CASES[case]
    project, url = project_copy(tmp_path), fresh_database()
    env = environment(url)
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "head")
    change(project / "models" / "media.py")
    made = run(["make", "revision", f"M={case}"], env, cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
    sql(url, bad_rows)

    failed = run(["alembic", "upgrade", "head"], env, cwd=project)
    assert failed.returncode != 0
    assert constraint in failed.stdout + failed.stderr
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == HEAD
        left = connection.scalar(
            text(
                "SELECT (SELECT count(*) FROM pg_constraint WHERE conname = :n "
                "AND NOT convalidated) + (SELECT count(*) FROM pg_index i JOIN pg_class c "
                "ON c.oid = i.indexrelid WHERE c.relname = :n AND NOT i.indisvalid)"
            ),
            {"n": constraint},
        )
        assert left == 1, "the failed run left its committed step behind (the case to mend)"

    sql(url, fix)
    for step in (["alembic", "upgrade", "head"], ["make", "verify"]):
        done = run(step, env, cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_way_down_cut_after_its_first_commit_finishes_when_run_again(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    """The way down drops the CHECK, commits before the index's DROP ... CONCURRENTLY, then
    drops the column: cut after that commit, it finds the CHECK gone when run again."""
    project, url = project_copy(tmp_path), fresh_database()
    env = environment(url)
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "head")
    models = project / "models" / "media.py"
    with_a_new_column(models)
    model_edits.add_table_arg(models, "MediaItem", 'Index("probe_codec_idx", "probe_codec")')
    for step in (["make", "revision", "M=column, check, index"], ["alembic", "upgrade", "head"]):
        done = run(step, env, cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr

    sql(url, "ALTER TABLE media_items DROP CONSTRAINT media_items_max_width_check")  # the cut
    done = run(["alembic", "downgrade", "-1"], env, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == HEAD
        assert connection.scalar(text("SELECT to_regclass('probe_codec_idx')")) is None
        gone = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'media_items'::regclass"
        assert connection.scalar(text(f"{gone} AND attname = 'probe_codec'")) == 0
