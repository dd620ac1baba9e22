"""A rename of an indexed, UNIQUE or referencing column never leaves a window without its index,
its uniqueness or its foreign key: the expand builds the new column's beside the old one's, which
serve old writers and readers until the contract drops them with the column; the contract's way
down builds them again. An index that keeps its name moves to the new column at the expand.
(What cannot follow a rename is refused:
tests/autogen/test_a_type_change_carries_its_index_check_and_comment.py.)

The columns are the test's own (`probe_path`, `probe_code`, `probe_parent`).
"""

from pathlib import Path

import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError

from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    RENAMED,
    assert_no_drift,
    down_to,
    execute,
    migrate,
    ok,
    probe_project,
    revision_text,
    scalar,
)
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy

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
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (RENAMED, RENAMED.replace(', info={"renamed_from": "probe_path"}', "")))
    ok(["make", "revision", "M=contract probe_file"], env, project)
    migrate(project, url, "upgrade", "head")
    assert indexes(url) == {"media_items_probe_file_idx"}
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)
    down_to(project, url, before)


def indexed_columns(url: URL) -> dict[str, str]:
    """{index: its definition's column list} of the probe indexes."""
    return dict(
        scalar(
            url,
            "SELECT coalesce(jsonb_object_agg(i.relname, "
            "substring(pg_get_indexdef(i.oid) from '\\((.*)\\)')), '{}') FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = 'media_items'::regclass "
            "AND x.indisvalid AND i.relname LIKE 'media_items_probe_%'",
        )
    )


def test_an_index_keeping_its_name_moves_to_the_new_column_with_it(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """The models keep the index's name and point it at the new column: the expand builds it
    there under a temporary name and swaps the names, the old column's waiting as `__old` until
    the contract; each step's way down gives back the catalog it came from."""
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_probe_path(models, url)
    model_edits.add_table_arg(models, "MediaItem", OLD_INDEX)
    execute(url, "CREATE INDEX media_items_probe_path_idx ON media_items (probe_path)")
    before = snapshot(url)
    same_name = 'Index("media_items_probe_path_idx", "probe_file")'
    edit(models, (model_edits.PROBE_PATH_LINE, RENAMED), (OLD_INDEX, same_name))

    ok(["make", "revision", "M=rename probe_path"], env, project)
    migrate(project, url, "upgrade", "head")
    assert indexed_columns(url) == {
        "media_items_probe_path_idx": "probe_file",
        "media_items_probe_path_idx__old": "probe_path",
    }
    assert_no_drift(ok(["make", "verify"], env, project))
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (RENAMED, RENAMED.replace(', info={"renamed_from": "probe_path"}', "")))
    ok(["make", "revision", "M=contract probe_file"], env, project)
    migrate(project, url, "upgrade", "head")
    assert indexed_columns(url) == {"media_items_probe_path_idx": "probe_file"}
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)
    down_to(project, url, before)


CODE = "probe_code: Mapped[str | None] = mapped_column(Text, unique=True)"
CODE_RENAMED = (
    "probe_tag: Mapped[str | None] = "
    'mapped_column(Text, unique=True, info={"renamed_from": "probe_code"})'
)
UNIQUES = (
    "SELECT coalesce(array_agg(conname::text ORDER BY conname), '{}') FROM pg_constraint "
    "WHERE conrelid = 'media_items'::regclass AND contype = 'u' AND conname LIKE '%%probe_%%'"
)


def test_a_renamed_unique_column_stays_unique_at_every_step(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        CODE,
        "ALTER TABLE media_items ADD COLUMN probe_code text "
        "CONSTRAINT media_items_probe_code_key UNIQUE",
    )
    before = snapshot(url)
    edit(models, (CODE, CODE_RENAMED))
    ok(["make", "revision", "M=rename probe_code"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, UNIQUES) == ["media_items_probe_code_key", "media_items_probe_tag_key"]
    assert_no_drift(ok(["make", "verify"], env, project))
    execute(
        url, "INSERT INTO media_items (source_url, source_type, probe_code) VALUES ('a', 'a', 'x')"
    )
    with pytest.raises(IntegrityError):  # an old writer's duplicate, through either column
        execute(
            url,
            "INSERT INTO media_items (source_url, source_type, probe_code) VALUES ('b', 'b', 'x')",
        )
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (CODE_RENAMED, CODE_RENAMED.replace(', info={"renamed_from": "probe_code"}', "")))
    ok(["make", "revision", "M=contract probe_tag"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, UNIQUES) == ["media_items_probe_tag_key"]
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)


CODE_KEEPING_ITS_NAME = (
    'probe_tag: Mapped[str | None] = mapped_column(Text, info={"renamed_from": "probe_code"})'
)
UNIQUE_BY_NAME = 'UniqueConstraint("probe_tag", name="media_items_probe_code_key")'
UNIQUE_DEFINITIONS = (
    "SELECT coalesce(jsonb_object_agg(conname, pg_get_constraintdef(oid)), '{}') "
    "FROM pg_constraint WHERE conrelid = 'media_items'::regclass AND contype = 'u' "
    "AND conname LIKE '%%probe_%%'"
)


def test_a_unique_constraint_keeping_its_name_moves_to_the_new_column_with_it(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """The models keep the UNIQUE constraint's name and put it on the new column: its index is
    built there, the constraint made over it, the old one waiting as `__old`; old writers'
    duplicates are refused by either; the contract drops the old one with its column."""
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        CODE,
        "ALTER TABLE media_items ADD COLUMN probe_code text "
        "CONSTRAINT media_items_probe_code_key UNIQUE",
    )
    edit(models, (CODE, CODE.replace(", unique=True", "")))  # the constraint by name, below
    model_edits.add_import(models, "from sqlalchemy import UniqueConstraint")
    model_edits.add_table_arg(
        models, "MediaItem", UNIQUE_BY_NAME.replace("probe_tag", "probe_code")
    )
    before = snapshot(url)
    edit(
        models,
        (CODE.replace(", unique=True", ""), CODE_KEEPING_ITS_NAME),
        (UNIQUE_BY_NAME.replace("probe_tag", "probe_code"), UNIQUE_BY_NAME),
    )
    ok(["make", "revision", "M=rename probe_code"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, UNIQUE_DEFINITIONS) == {
        "media_items_probe_code_key": "UNIQUE (probe_tag)",
        "media_items_probe_code_key__old": "UNIQUE (probe_code)",
    }
    assert_no_drift(ok(["make", "verify"], env, project))
    execute(
        url, "INSERT INTO media_items (source_url, source_type, probe_code) VALUES ('a', 'a', 'x')"
    )
    for column in ("probe_code", "probe_tag"):
        with pytest.raises(IntegrityError):
            execute(
                url,
                f"INSERT INTO media_items (source_url, source_type, {column}) "
                "VALUES ('b', 'b', 'x')",
            )
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (', info={"renamed_from": "probe_code"}', ""))
    ok(["make", "revision", "M=contract probe_tag"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, UNIQUE_DEFINITIONS) == {"media_items_probe_code_key": "UNIQUE (probe_tag)"}
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)


PARENT = 'probe_parent: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("media_items.id"))'
PARENT_RENAMED = (
    "probe_origin: Mapped[uuid.UUID | None] = "
    'mapped_column(ForeignKey("media_items.id"), info={"renamed_from": "probe_parent"})'
)
KEYS = (
    "SELECT coalesce(array_agg(conname::text ORDER BY conname), '{}') FROM pg_constraint "
    "WHERE conrelid = 'media_items'::regclass AND contype = 'f' AND convalidated"
)


def test_a_renamed_columns_foreign_key_holds_at_every_step(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        PARENT,
        "ALTER TABLE media_items ADD COLUMN probe_parent uuid CONSTRAINT "
        "media_items_probe_parent_fkey REFERENCES media_items (id)",
    )
    before = snapshot(url)
    edit(models, (PARENT, PARENT_RENAMED))
    ok(["make", "revision", "M=rename probe_parent"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, KEYS) == ["media_items_probe_origin_fkey", "media_items_probe_parent_fkey"]
    assert_no_drift(ok(["make", "verify"], env, project))
    with pytest.raises(IntegrityError):  # an old writer's dangling reference
        execute(
            url,
            "INSERT INTO media_items (source_url, source_type, probe_parent) "
            "VALUES ('a', 'a', gen_random_uuid())",
        )
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(
        models,
        (PARENT_RENAMED, PARENT_RENAMED.replace(', info={"renamed_from": "probe_parent"}', "")),
    )
    ok(["make", "revision", "M=contract probe_origin"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, KEYS) == ["media_items_probe_origin_fkey"]
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)


WIDTH = "    width: Mapped[int | None]\n"
WIDTH_RENAMED = (
    '    width: Mapped[int | None] = mapped_column("pixel_width", key="width", '
    'info={"renamed_from": "width"})\n'
)
WIDTH_CHECK = (
    'CheckConstraint("width > 0", name="width")',
    'CheckConstraint("pixel_width > 0", name="width")',
)
CHECKS = (
    "SELECT coalesce(jsonb_object_agg(conname, pg_get_constraintdef(oid)), '{}') "
    "FROM pg_constraint WHERE conrelid = 'media_items'::regclass AND conname LIKE '%%width%%'"
)


@pytest.mark.parametrize("column", ["width", "pixel_width"])
def test_a_renamed_columns_check_holds_at_every_step(
    tmp_path: Path, head_copy: FreshDatabase, column: str
) -> None:
    """Our own `media_items.width` and its CHECK (width > 0): the expand adds the CHECK over the
    new column and gives it the name, the old column's waiting as `__old`; a writer of either
    name is held to it; the contract drops the old one with its column."""
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)
    edit(models, (WIDTH, WIDTH_RENAMED), WIDTH_CHECK)
    ok(["make", "revision", "M=rename width"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, CHECKS) == {
        "media_items_width_check": "CHECK ((pixel_width > 0))",
        "media_items_width_check__old": "CHECK ((width > 0))",
    }
    assert_no_drift(ok(["make", "verify"], env, project))
    with pytest.raises(IntegrityError):
        execute(
            url,
            f"INSERT INTO media_items (source_url, source_type, {column}) VALUES ('a', 'a', 0)",
        )
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (', info={"renamed_from": "width"}', ""))
    ok(["make", "revision", "M=contract pixel_width"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, CHECKS) == {"media_items_width_check": "CHECK ((pixel_width > 0))"}
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)
