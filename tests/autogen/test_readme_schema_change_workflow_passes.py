"""The documented schema-change steps (docs/schema-changes.md), followed verbatim in a throwaway
copy of the project, pass: a column added to a model goes through `make revision`, review
(filling in Why:), upgrade, verify, downgrade, upgrade, lint-sql and the tests. The commands are
read from that page itself, so the two cannot drift apart."""

import re
from pathlib import Path

from tests import model_edits
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, REPO_ROOT, edit, environment, project_copy, run
from tests.servers import DatabaseServer

SECTION = "## Changing the schema (autogenerate)"
# `make test` in the copy runs the tests a schema change can break (the whole suite inside the
# suite would double its time), on the server this run already uses.
SCHEMA_CHANGE_TESTS = [
    "tests/deploy/test_revisions_are_reviewable.py",
    "tests/dev/test_schema_diagram_is_current.py",
    "tests/deploy/test_models_match_migrations.py",
    # The new revision's step: the others' are this run's own (revisions import no models).
    f"tests/deploy/test_stairway.py::test_revision_goes_up_down_up[{NEXT_REVISION}]",
    "tests/deploy/test_offline_sql_matches_online.py",
    # pytest-alembic's builtins add nothing here: the stairway step above is the new revision's
    # up/down, test_models_match_migrations its model match, and this one its single head.
    "tests/deploy/test_history_has_one_head.py::test_this_projects_history_is_one_line",
    # The records as the models generate them; not the file's scenarios on copies of their own.
    *(
        f"tests/runtime/test_records_match_models.py::{test}"
        for test in (
            "test_committed_records_are_what_the_models_generate",
            "test_record_fields_are_the_table_columns",
            "test_an_input_names_every_column_neither_the_server_nor_the_repository_sets",
            "test_every_statement_names_a_column_by_its_key",
        )
    ),
    # These add columns of their own: they must not collide with the documented example.
    "tests/deploy/test_schema_is_the_same_on_every_major.py",
    "tests/deploy/test_dropped_data_is_never_lost_unasked.py",
]


def readme_steps() -> list[str]:
    page = (REPO_ROOT / "docs" / "schema-changes.md").read_text()
    block = re.search(r"```bash\n(.*?)```", page[page.index(SECTION) :], re.S)
    assert block, f"docs/schema-changes.md's {SECTION!r} section has no bash block"
    return [line.split("  #")[0].strip() for line in block[1].splitlines()]


def test_readme_steps_pass_verbatim(
    tmp_path: Path, fresh_database: FreshDatabase, server: DatabaseServer
) -> None:
    project, url = project_copy(tmp_path), fresh_database()
    env = environment(url)
    model_edits.add_column(
        project / "models" / "media.py",
        "MediaItem",
        "thumbnail_path: Mapped[str | None] = mapped_column(String(500))",
    )
    steps = readme_steps()
    assert steps[-1] == "make test"
    for step in steps:
        if step.startswith("# review"):
            [revision] = (project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*.py")
            edit(
                revision,
                (
                    "Why: <what this changes and why; a reviewer reads this before the SQL>.",
                    "Why: thumbnails are stored next to the media file.",
                ),
            )
            continue
        if step == "make test":
            admin = server.admin_url.render_as_string(hide_password=False)
            env = {**env, "TEST_DB_BACKEND": "service", "TEST_DATABASE_URL": admin}
            env.pop("PYTEST_ADDOPTS", None)  # the outer run's, e.g. its --basetemp
            # One process: two workers would each build their own database at head, for a
            # handful of tests.
            step = f'make test PYTEST_ARGS="-n 0 {" ".join(SCHEMA_CHANGE_TESTS)}"'
        done = run(["bash", "-c", step], env, cwd=project, timeout=600)
        assert done.returncode == 0, f"{step}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert "thumbnail_path" in (project / "docs" / "schema.md").read_text()


def test_make_revision_with_nothing_to_do_writes_nothing(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    project, env = project_copy(tmp_path), environment(fresh_database())
    assert run(["make", "upgrade"], env, cwd=project).returncode == 0
    made = run(["make", "revision", "M=nothing"], env, cwd=project)
    assert made.returncode != 0
    assert "no revision written" in made.stdout + made.stderr
    assert not list((project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*"))
