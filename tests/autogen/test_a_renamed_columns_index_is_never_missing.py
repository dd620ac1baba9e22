"""A rename of an indexed column never leaves a window without an index: the expand builds the
new column's index beside the old one, which serves old readers until the contract drops it
with the column; the contract's way down builds it again. (A key on the old column cannot follow
a rename yet: tests/autogen/test_a_type_change_carries_its_index_check_and_comment.py.)

The column is the test's own (`probe_path`).
"""

from pathlib import Path

from sqlalchemy import URL

from media_db.deploy import catalog
from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    RENAMED,
    assert_no_drift,
    execute,
    migrate,
    ok,
    revision_text,
    scalar,
)
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run

OLD_INDEX = 'Index("media_items_probe_path_idx", "probe_path")'
NEW_INDEX = 'Index("media_items_probe_file_idx", "probe_file")'


def indexes(url: URL) -> set[str]:
    """The valid indexes on media_items whose names start with media_items_probe_."""
    return set(
        scalar(
            url,
            "SELECT coalesce(array_agg(i.relname::text), '{}') FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = 'media_items'::regclass "
            "AND x.indisvalid AND i.relname LIKE 'media_items_probe_%'",
        )
    )


def test_the_new_index_is_built_before_the_old_one_goes(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_probe_path(models, url)
    model_edits.add_table_arg(models, "MediaItem", OLD_INDEX)
    execute(url, "CREATE INDEX media_items_probe_path_idx ON media_items (probe_path)")
    before = snapshot(url)
    edit(models, (model_edits.PROBE_PATH_LINE, RENAMED), (OLD_INDEX, NEW_INDEX))

    ok(["make", "revision", "M=rename probe_path"], env, project)
    upgrade = revision_text(project, NEXT_REVISION).split("def downgrade")[0]
    assert "DROP INDEX" not in upgrade.replace("DROP INDEX media_items_probe_file_idx", "")
    assert "media_items_probe_file_idx" in upgrade
    migrate(project, url, "upgrade", "head")
    assert indexes(url) == {"media_items_probe_path_idx", "media_items_probe_file_idx"}
    assert_no_drift(ok(["make", "verify"], env, project))
    expanded = snapshot(url)
    migrate(project, url, "downgrade", "-1")
    assert catalog.differences(before, snapshot(url), set(before)) == []
    migrate(project, url, "upgrade", "head")

    edit(models, (RENAMED, RENAMED.replace(', info={"renamed_from": "probe_path"}', "")))
    ok(["make", "revision", "M=contract probe_file"], env, project)
    migrate(project, url, "upgrade", "head")
    assert indexes(url) == {"media_items_probe_file_idx"}
    assert_no_drift(ok(["make", "verify"], env, project))
    migrate(project, url, "downgrade", "-1")
    assert catalog.differences(expanded, snapshot(url), set(expanded)) == []
    migrate(project, url, "downgrade", "-1")
    assert catalog.differences(before, snapshot(url), set(before)) == []


def test_a_new_index_cannot_take_the_name_the_old_column_keeps(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
    model_edits.existing_probe_path(models, url)
    model_edits.add_table_arg(models, "MediaItem", OLD_INDEX)
    execute(url, "CREATE INDEX media_items_probe_path_idx ON media_items (probe_path)")
    same_name = 'Index("media_items_probe_path_idx", "probe_file")'
    edit(models, (model_edits.PROBE_PATH_LINE, RENAMED), (OLD_INDEX, same_name))
    made = run(["make", "revision", "M=rename probe_path"], environment(url), cwd=project)
    assert made.returncode != 0
    output = " ".join((made.stdout + made.stderr).split())
    assert (
        "create_index media_items_probe_path_idx on media_items: an index of that name stays on "
        "the renamed column's old name until the contract" in output
    ), output
