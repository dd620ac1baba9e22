"""While a rename of a column with a default is in flight, each writer gets what it wrote, by
either name: an explicit NULL stays NULL (it used to become the default in both columns), a
column left out gets its default, a value is copied to the other name, and a write giving
both names different values is refused rather than one dropped; the rollback gives the
old column back exactly so, and the contract's way down puts its default back.

The column is the test's own (`probe_state`).
"""

from pathlib import Path

from sqlalchemy import URL, create_engine, pool, text

from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    both_names_must_agree,
    catalog_is,
    execute,
    migrate,
    ok,
    probe_project,
)
from tests.conftest import FreshDatabase
from tests.helpers import edit

STATE = 'probe_state: Mapped[str | None] = mapped_column(Text, server_default="new")'
RENAMED = (
    'probe_phase: Mapped[str | None] = mapped_column(Text, server_default="new", '
    'info={"renamed_from": "probe_state"})'
)
# Each writer's INSERT (its source_url names it) and what both columns must hold after it.
WRITES = {
    "old shape, explicit NULL": ("probe_state", "NULL", (None, None)),
    "old shape, left out": (None, None, ("new", "new")),
    "old shape, a value": ("probe_state", "'x1'", ("x1", "x1")),
    "new shape, explicit NULL": ("probe_phase", "NULL", (None, None)),
    "new shape, a value": ("probe_phase", "'x2'", ("x2", "x2")),
}


def written(url: URL, columns: str) -> dict[str, tuple[object, ...]]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        rows = connection.execute(
            text(f"SELECT source_url, {columns} FROM media_items WHERE source_type = 'writer'")
        )
        return {row[0]: tuple(row[1:]) for row in rows}


def test_each_writer_gets_what_it_wrote_by_either_name(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        STATE,
        "ALTER TABLE media_items ADD COLUMN probe_state text DEFAULT 'new'",
    )
    before = snapshot(url)
    edit(models, (STATE, RENAMED))
    ok(["make", "revision", "M=rename probe_state"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))

    for writer, (column, value, _) in WRITES.items():
        named = f", {column}" if column else ""
        given = f", {value}" if column else ""
        execute(
            url,
            f"INSERT INTO media_items (source_url, source_type{named}) "
            f"VALUES ('{writer}', 'writer'{given})",
        )
    assert written(url, "probe_state, probe_phase") == {
        writer: both for writer, (_, _, both) in WRITES.items()
    }
    both_names_must_agree(url, "probe_state", "probe_phase", "'x3'", ("'x4'", "NULL"))

    migrate(project, url, "downgrade", "-1")  # the old column as each writer left it
    catalog_is(url, before)
    assert written(url, "probe_state") == {
        writer: both[:1] for writer, (_, _, both) in WRITES.items()
    }

    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)
    edit(models, (RENAMED, RENAMED.replace(', info={"renamed_from": "probe_state"}', "")))
    ok(["make", "revision", "M=contract probe_phase"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    migrate(project, url, "downgrade", "-1")  # probe_state back, with its default
    catalog_is(url, expanded)
