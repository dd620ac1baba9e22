"""One model edit that renames a column and widens another's type (indexed, NOT NULL, with a
default) gives one revision with both expands: it goes up, down (nothing lost, no consent)
and up again while writers of both shapes run, then one contract takes both away and its way
down gives both back.

The columns are the test's own (`probe_state`, `probe_total`).
"""

from pathlib import Path
from typing import Any

from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    catalog_is,
    execute,
    migrate,
    ok,
    probe_project,
    revision_text,
    scalar,
    writing,
)
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit

STATE = 'probe_state: Mapped[str | None] = mapped_column(Text, server_default="new")'
TOTAL = 'probe_total: Mapped[int] = mapped_column(server_default=text("0"), index=True)'
BEFORE = f"{STATE}\n    {TOTAL}"
EXPANDED = (
    'probe_phase: Mapped[str | None] = mapped_column(Text, server_default="new", '
    'info={"renamed_from": "probe_state"})\n'
    '    probe_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), '
    'index=True, info={"using": "probe_total::bigint"})'
)
CONTRACTED = (
    'probe_phase: Mapped[str | None] = mapped_column(Text, server_default="new")\n'
    '    probe_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), '
    "index=True)"
)
# Each writer's rows say what they hold: probe_state (or probe_phase) is its tag and the total.
OUT_OF_STEP = """
    SELECT count(*) FROM media_items
    WHERE source_type = 'writer' AND {state} IS DISTINCT FROM source_url || probe_total
"""
OLD_SHAPE = (
    "INSERT INTO media_items (source_url, source_type, probe_state, probe_total) "
    "VALUES ('old', 'writer', 'old' || %(n)s, %(n)s)"
)
NEW_SHAPE = OLD_SHAPE.replace("probe_state", "probe_phase").replace("'old'", "'new'")


def shape(sql: str) -> Any:
    return lambda n: [(sql, {"n": n})]


def test_a_rename_and_a_type_change_in_one_revision_go_up_and_down_together(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        BEFORE,
        "ALTER TABLE media_items ADD COLUMN probe_state text DEFAULT 'new';",
        "ALTER TABLE media_items ADD COLUMN probe_total integer NOT NULL DEFAULT 0;",
        "CREATE INDEX media_items_probe_total_idx ON media_items (probe_total);",
    )
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_state, probe_total) "
        "SELECT 'seed', 'writer', 'seed' || g, g FROM generate_series(1, 12000) g",
    )
    before = snapshot(url)
    edit(models, (BEFORE, EXPANDED))
    ok(["make", "revision", "M=rename probe_state and widen probe_total"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    for step in (
        "add_column media_items.probe_phase (renamed from probe_state)",
        "cutover of media_items.probe_total",
    ):
        assert step in " ".join(expand.split()), step  # its Locks: line, as a reviewer reads it

    old_writer, new_writer = shape(OLD_SHAPE), shape(NEW_SHAPE)
    with writing(url, old_writer, new_writer):
        migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    assert scalar(url, OUT_OF_STEP.format(state="probe_phase")) == 0

    with writing(url, old_writer):  # no consent: each old column holds all
        migrate(project, url, "downgrade", "-1")
    catalog_is(url, before)
    assert scalar(url, OUT_OF_STEP.format(state="probe_state")) == 0

    with writing(url, old_writer):
        migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)
    edit(models, (EXPANDED, CONTRACTED))
    ok(["make", "revision", "M=contract probe_phase and probe_total"], env, project)
    with writing(url, new_writer):
        migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    assert "Contracting" not in ok(["make", "verify"], env, project)
    assert scalar(url, OUT_OF_STEP.format(state="probe_phase")) == 0

    with writing(url, new_writer):
        migrate(project, url, "downgrade", "-1")
    catalog_is(url, expanded)
    assert scalar(url, OUT_OF_STEP.format(state="probe_phase")) == 0
