"""Changing the type of a primary-key column (`processing_limits.key`, varchar(50) narrowed to
varchar(40) with `using`/`down`): the expand builds two unique indexes CONCURRENTLY, one over
the shadow column and a spare over the old one, so that the cutover (the key made over the
shadow's index, under its own name) and its way down (the key back over the spare) are catalog
updates, and the table is never without a unique index over `key`. Raw writers upserting by
`key` (ON CONFLICT needs that index at every moment) and inserting keep working through the
expand, its rollback, the contract and its way down; each rollback gives back every value each
writer wrote, and a key longer than the new type, which only the old column holds; the API
works at every step; each way down gives back the catalog it came from.

Where a foreign key references the key (`probe_limit_key`, the test's own column on
processing_jobs, ON DELETE CASCADE), it follows: a copy over the shadow (NOT VALID, then
VALIDATE) takes its name at the cutover, and the way down puts it back on the old column with
the key. A child row must name an existing key, and a delete cascades, at every step. A key
whose referencing columns cannot reference the new type is refused in one line naming them
(`media_items.id`, uuid, to text).
"""

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError

from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    Statements,
    assert_no_drift,
    catalog_is,
    down_to,
    execute,
    migrate,
    ok,
    refused,
    revision_text,
    scalar,
    writing,
)
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, api_works, edit, environment, project_copy

KEY = "    key: Mapped[str] = mapped_column(String(50), primary_key=True)\n"
NARROWED = (
    "    key: Mapped[str] = mapped_column(\n"
    '        String(40), primary_key=True, info={"using": "left(key, 40)", "down": "key"}\n'
    "    )\n"
)
CONTRACTED = KEY.replace("50", "40")
LONG = "long-" + "k" * 40  # fits varchar(50), not varchar(40)
PRIMARY_KEY = (
    "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = 'processing_limits'::regclass AND contype = 'p'"
)
REFERENCING = (
    "probe_limit_key: Mapped[str | None] = mapped_column("
    'String(50), ForeignKey("processing_limits.key", ondelete="CASCADE"))'
)
REFERENCING_DDL = (
    "ALTER TABLE processing_jobs ADD COLUMN probe_limit_key varchar(50) "
    "CONSTRAINT processing_jobs_probe_limit_key_fkey "
    "REFERENCES processing_limits(key) ON DELETE CASCADE"
)
API = """
        queue = JobQueue(db)
        limit = await queue.set_limit("api", max_running=3)
        assert limit.key == "api" and limit.max_running == 3, limit
        assert (await queue.set_limit("api", max_running=4)).max_running == 4
        assert [l.key for l in await queue.limits() if l.key == "api"] == ["api"]
        await queue.clear_limit("api")
"""


def shapes(phase: str) -> tuple[Statements, Statements]:
    """Two raw writers for `phase`: one upserting 30 keys by `key` (each round adds one to a
    key's max_running), one inserting a key of its own each round."""

    def upserts(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO processing_limits (key, max_running) VALUES (%(k)s, 1) "
                "ON CONFLICT (key) DO UPDATE SET max_running = processing_limits.max_running + 1",
                {"k": f"{phase}-u{n % 30}"},
            )
        ]

    def inserts(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO processing_limits (key, max_running) VALUES (%(k)s, 7)",
                {"k": f"{phase}-i{n}"},
            )
        ]

    return upserts, inserts


def keyed(project: Path, url: URL, phase: str, written: tuple[int, int], referenced: bool) -> None:
    """The key is `processing_limits_pkey` over `key`, refuses a duplicate, and holds every
    value the writers of `phase` wrote (`written`: their rounds); `referenced`: a job must name
    an existing key, and goes with it; the API works."""
    assert scalar(url, PRIMARY_KEY) == "processing_limits_pkey PRIMARY KEY (key)"
    with pytest.raises(IntegrityError):
        execute(url, f"INSERT INTO processing_limits (key) VALUES ('{phase}-i0')")
    upserted, inserted = written
    if referenced:
        job = "INSERT INTO processing_jobs (workflow_type, probe_limit_key) VALUES ('raw', '{}')"
        with pytest.raises(IntegrityError):
            execute(url, job.format(f"{phase}-missing"))
        execute(url, job.format(f"{phase}-i1"))
        execute(url, f"DELETE FROM processing_limits WHERE key = '{phase}-i1'")
        assert (
            scalar(url, "SELECT count(*) FROM processing_jobs WHERE probe_limit_key IS NOT NULL")
            == 0
        )
        inserted -= 1  # that one went with its job
    assert min(upserted, inserted) > 0
    held = scalar(url, f"SELECT sum(max_running) FROM processing_limits WHERE key ~ '^{phase}-u'")
    assert held == upserted
    assert (
        scalar(url, f"SELECT count(*) FROM processing_limits WHERE key ~ '^{phase}-i[0-9]+$'")
        == inserted
    )
    api_works(project, url, API)


@pytest.mark.parametrize("referenced", [False, True], ids=["alone", "referenced"])
def test_a_primary_keys_type_change_keeps_a_unique_key_and_every_value_at_every_step(
    referenced: bool, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    if referenced:
        model_edits.existing_column(models, url, "ProcessingJob", REFERENCING, REFERENCING_DDL)
    execute(
        url,
        "INSERT INTO processing_limits (key, max_running) "
        f"SELECT 'seed-' || g, 1 FROM generate_series(1, 6000) g UNION ALL SELECT '{LONG}', 1",
    )
    before = snapshot(url)

    edit(models, (KEY, NARROWED))
    ok(["make", "revision", "M=narrow processing_limits.key"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert (
        "ADD CONSTRAINT processing_limits_pkey PRIMARY KEY USING INDEX processing_limits_pkey__new"
        in expand
    )
    assert (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS processing_limits_pkey__old "
        "ON processing_limits (key)" in expand
    )
    copy = "ADD CONSTRAINT processing_jobs_probe_limit_key_fkey__new FOREIGN KEY (probe_limit_key)"
    assert (copy in expand) == referenced
    with writing(url, *shapes("up")) as writers:
        migrate(project, url, "upgrade", "head")
    keyed(project, url, "up", (writers[0].written, writers[1].written), referenced)
    assert scalar(url, f"SELECT key FROM processing_limits WHERE key__old = '{LONG}'") == LONG[:40]
    verified = ok(["make", "verify"], env, project)
    assert_no_drift(verified)
    assert "retype processing_limits.key" in verified
    expanded = snapshot(url)

    # The way down: the key back over the spare, every value as its writer wrote it.
    with writing(url, *shapes("down")) as writers:
        migrate(project, url, "downgrade", "-1")
    catalog_is(url, before)
    keyed(project, url, "down", (writers[0].written, writers[1].written), referenced)
    assert scalar(url, f"SELECT count(*) FROM processing_limits WHERE key = '{LONG}'") == 1
    execute(url, "DELETE FROM processing_limits WHERE key ~ '^(up|down)-'")
    migrate(project, url, "upgrade", "head")
    catalog_is(url, expanded)

    edit(models, (NARROWED, CONTRACTED))
    ok(["make", "revision", "M=contract processing_limits.key"], env, project)
    # Only the old column holds the long key: the contract's guard keeps it until it goes.
    execute(url, f"DELETE FROM processing_limits WHERE key__old = '{LONG}'")
    with writing(url, *shapes("contract")) as writers:
        migrate(project, url, "upgrade", "head")
    keyed(project, url, "contract", (writers[0].written, writers[1].written), referenced)
    assert "key__old" not in snapshot(url)["processing_limits"].columns
    assert_no_drift(ok(["make", "verify"], env, project))
    with writing(url, *shapes("uncontract")) as writers:
        down_to(project, url, expanded)
    keyed(project, url, "uncontract", (writers[0].written, writers[1].written), referenced)


MEDIA_ID = """    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER
    )
    source_url"""
MEDIA_ID_AS_TEXT = MEDIA_ID.replace(
    "id: Mapped[uuid.UUID] = mapped_column(\n        primary_key=True,",
    "id: Mapped[str] = mapped_column(\n        Text,\n        primary_key=True,",
).replace(
    "info=SET_BY_SERVER",
    'info={**SET_BY_SERVER, "using": "id::text", "down": "id::uuid"}',
)


def test_a_key_its_references_cannot_follow_to_the_new_type_is_refused_naming_them(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """uuid to text on `media_items.id`: no foreign key from a uuid column can reference a
    text key, so no expand could carry them; the one refusal line names both referencing
    columns and what to do instead, and nothing is written."""
    project, url = project_copy(tmp_path), head_copy()
    edit(project / "models" / "media.py", (MEDIA_ID, MEDIA_ID_AS_TEXT))
    refused(
        project,
        url,
        "alter_column media_items.id",
        "analysis_results.media_item_id (analysis_results_media_item_id_fkey)",
        "processing_jobs.media_item_id (processing_jobs_media_item_id_fkey)",
        "cannot reference TEXT",
        "drop those foreign keys in a revision before this one",
    )
