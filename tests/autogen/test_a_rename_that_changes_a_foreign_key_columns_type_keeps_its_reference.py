"""A rename that changes the type of a foreign-key column too (`renamed_from` with `using` and
`down`): `processing_jobs.probe_limit_key` (the test's own column, varchar(50), referencing
`processing_limits.key` ON DELETE CASCADE) renamed `probe_limit` and made text. Raw writers of
the old shape and of the new one keep working through the expand, its rollback, the contract
and its way down; a job must name an existing key by either name, and goes with its key, at
every step; each rollback gives every job its key back, as written.

Where the new type cannot reference the key (`processing_jobs.media_item_id`, uuid, renamed
and made text: no text column can reference a uuid key), `make revision` refuses in one line
naming the foreign key and what to do instead, and writes nothing: before, it wrote an expand
whose foreign key the server refused half-way through the deploy.
"""

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError

from tests import model_edits
from tests.autogen.test_a_primary_keys_type_change_keeps_a_unique_key_at_every_step import (
    REFERENCING,
    REFERENCING_DDL,
)
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    Statements,
    assert_no_drift,
    down_to,
    execute,
    migrate,
    ok,
    refused,
    scalar,
    writing,
)
from tests.conftest import FreshDatabase
from tests.helpers import edit, environment, project_copy

RENAMED = (
    'probe_limit_key: Mapped[str | None] = mapped_column("probe_limit", Text, '
    'ForeignKey("processing_limits.key", ondelete="CASCADE"), key="probe_limit_key", '
    'info={"renamed_from": "probe_limit_key", "using": "probe_limit_key::text", '
    '"down": "CAST(probe_limit AS varchar(50))"})'
)
CONTRACTED = RENAMED.partition(", info=")[0] + ")"
KEYS = 30
JOBS = "SELECT count(*) FROM processing_jobs WHERE workflow_type = '{}' AND {} = 'k-' || {}"


def shape(column: str, phase: str) -> Statements:
    """A raw writer of `phase` inserting a job naming a key by `column`, each round."""

    def inserts(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                f"INSERT INTO processing_jobs (workflow_type, max_attempts, {column}) "
                "VALUES (%(w)s, %(n)s, %(k)s)",
                # max_attempts holds the round: what the job's key must be, from its row.
                {"w": f"{phase}-{column}", "n": n + 1, "k": f"k-{n % KEYS}"},
            )
        ]

    return inserts


def held(url: URL, phase: str, writer: Any, wrote: str, now: str) -> None:
    """Every job the writer of `phase` wrote by `wrote` names its key, read by `now`."""
    found = scalar(url, JOBS.format(f"{phase}-{wrote}", now, f"(max_attempts - 1) % {KEYS}"))
    assert found == writer.written > 0, (phase, wrote, now, found, writer.written)


def referenced(url: URL, phase: str, *columns: str) -> None:
    """By each of `columns`: a job naming no key is refused; a key's jobs go with it."""
    for column in columns:
        with pytest.raises(IntegrityError):
            execute(
                url,
                f"INSERT INTO processing_jobs (workflow_type, {column}) VALUES ('x', 'missing')",
            )
        key = f"{phase}-{column}"
        execute(url, f"INSERT INTO processing_limits (key) VALUES ('{key}')")
        execute(url, f"INSERT INTO processing_jobs (workflow_type, {column}) VALUES ('x', '{key}')")
        execute(url, f"DELETE FROM processing_limits WHERE key = '{key}'")
        assert scalar(url, "SELECT count(*) FROM processing_jobs WHERE workflow_type = 'x'") == 0


def test_a_foreign_key_column_renamed_and_retyped_keeps_its_reference_and_every_value(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_column(models, url, "ProcessingJob", REFERENCING, REFERENCING_DDL)
    execute(
        url,
        "INSERT INTO processing_limits (key) SELECT 'k-' || g FROM generate_series(0, 29) g; "
        "INSERT INTO processing_jobs (workflow_type, probe_limit_key) "
        f"SELECT 'seed', 'k-' || g % {KEYS} FROM generate_series(1, 6000) g",
    )
    before = snapshot(url)
    edit(models, (REFERENCING, RENAMED))
    ok(["make", "revision", "M=probe_limit"], env, project)

    old, new = "probe_limit_key", "probe_limit"
    with writing(url, shape(old, "up"), shape(new, "up")) as (old_writer, new_writer):
        migrate(project, url, "upgrade", "head")
    for wrote, writer in ((old, old_writer), (new, new_writer)):
        for now in (old, new):  # each job's key under both names
            held(url, "up", writer, wrote, now)
    assert scalar(url, f"SELECT count(*) FROM processing_jobs WHERE {new} IS NULL") == 0
    referenced(url, "up", old, new)
    assert_no_drift(ok(["make", "verify"], env, project))

    # The rollback: the old shape's writer goes on; every job keeps its key, as written.
    with writing(url, shape(old, "down")) as (down_writer,):
        down_to(project, url, before)
    for phase, wrote, writer in (
        ("up", old, old_writer),
        ("up", new, new_writer),
        ("down", old, down_writer),
    ):
        held(url, phase, writer, wrote, old)
    referenced(url, "down", old)
    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)

    edit(models, (RENAMED, CONTRACTED))
    ok(["make", "revision", "M=contract probe_limit"], env, project)
    with writing(url, shape(new, "contract")) as (contract_writer,):
        migrate(project, url, "upgrade", "head")
    held(url, "contract", contract_writer, new, new)
    referenced(url, "contract", new)
    assert_no_drift(ok(["make", "verify"], env, project))
    with writing(url, shape(new, "uncontract")) as (uncontract_writer,):
        down_to(project, url, expanded)
    for now in (old, new):
        held(url, "contract", contract_writer, new, now)
        held(url, "uncontract", uncontract_writer, new, now)
    referenced(url, "uncontract", old, new)


JOB = """    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media_items.id", ondelete="CASCADE")
    )
    workflow_type"""
JOB_AS_TEXT = JOB.replace("uuid.UUID | None", "str | None").replace(
    '        ForeignKey("media_items.id", ondelete="CASCADE")\n',
    '        "media_ref",\n        Text,\n'
    '        ForeignKey("media_items.id", ondelete="CASCADE"),\n'
    '        key="media_item_id",\n        info={"renamed_from": "media_item_id", '
    '"using": "media_item_id::text", "down": "media_ref::uuid"},\n',
)


JOB_RETYPED_TO_TEXT = JOB.replace("uuid.UUID | None", "str | None").replace(
    '        ForeignKey("media_items.id", ondelete="CASCADE")\n',
    "        Text,\n"
    '        ForeignKey("media_items.id", ondelete="CASCADE"),\n'
    '        info={"using": "media_item_id::text", "down": "media_item_id::uuid"},\n',
)
CANNOT_REFERENCE = {
    "renamed": (JOB_AS_TEXT, "add_column processing_jobs.media_ref (renamed from media_item_id)"),
    "retyped": (
        JOB_RETYPED_TO_TEXT,
        "alter_column processing_jobs.media_item_id type UUID to TEXT",
    ),
}


@pytest.mark.parametrize("change", CANNOT_REFERENCE)
def test_a_foreign_key_column_whose_new_type_cannot_reference_the_key_is_refused(
    change: str, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    edited, where = CANNOT_REFERENCE[change]
    project, url = project_copy(tmp_path), head_copy()
    edit(project / "models" / "media.py", (JOB, edited))
    refused(
        project,
        url,
        where,
        "its foreign key to media_items.id cannot be over TEXT",
        "incompatible types: text and uuid",
        "Keep its type",
        "take the ForeignKey off the model, with the relationship()s that join through it",
    )
