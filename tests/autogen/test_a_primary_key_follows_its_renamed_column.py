"""Renaming a primary-key column (`analysis_results.id`, pgroll's "rename a primary key
column"): the old column keeps the primary key until the contract while a unique index is built
CONCURRENTLY over the new one; the contract drops the old column and makes that index the
primary key, under the same name, in one transaction, so the table is never without one. Old
writers (who leave `id` to its default) and new ones (`result_id`) keep working, the API reads
and writes by either name, and each step's way down gives back the catalog it came from."""

from pathlib import Path

import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError

from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    down_to,
    execute,
    migrate,
    ok,
    scalar,
)
from tests.conftest import FreshDatabase
from tests.helpers import api_works, edit, environment, project_copy

DECLARED = """    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER
    )
    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media_items.id", ondelete="CASCADE")
    )
    analysis_type"""
ID_ARGUMENTS = "        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER\n"
MARKED = 'info={**SET_BY_SERVER, "renamed_from": "id"}'


def id_renamed(declared: str, name: str) -> tuple[str, str]:
    """A model's `id` (its declaration, `declared`) renamed `name` in the database, keeping the
    key the code uses: the expand's declaration, and the contract's (the marker gone)."""
    renamed = declared.replace(
        ID_ARGUMENTS,
        f'        "{name}",\n        primary_key=True,\n        server_default=NEW_UUID,\n'
        f'        key="id",\n        {MARKED},\n',
    )
    return renamed, renamed.replace(MARKED, "info=SET_BY_SERVER")


RENAMED, CONTRACTED = id_renamed(DECLARED, "result_id")
PRIMARY_KEY = (
    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = 'analysis_results'::regclass AND contype = 'p'"
)
API = """
        item = await MediaRepository(db).create(NewMedia("s3://api", "upload"))
        results = AnalysisRepository(db)
        started = await results.start(item.id, "caption", "api")
        done = await results.complete(started.id, {"ok": True})
        assert done.id == started.id and done.result_data == {"ok": True}, done
        assert [r.id for r in await results.for_media_item(item.id)] == [started.id]
"""


def writes_by_either_name(project: Path, url: URL, columns: tuple[str, ...]) -> None:
    item = scalar(
        url, "INSERT INTO media_items (source_url, source_type) VALUES ('r', 'r') RETURNING id"
    )
    for column in columns:  # a raw writer giving the key by this name, and one leaving it out
        execute(
            url,
            f"INSERT INTO analysis_results ({column}, media_item_id, analysis_type, provider) "
            f"VALUES (gen_random_uuid(), '{item}', 'caption', 'raw')",
        )
    execute(
        url,
        "INSERT INTO analysis_results (media_item_id, analysis_type, provider) "
        f"VALUES ('{item}', 'caption', 'raw')",
    )
    taken = scalar(url, f"SELECT {columns[-1]} FROM analysis_results LIMIT 1")
    with pytest.raises(IntegrityError):  # the key stays unique, whichever name a writer uses
        execute(
            url,
            f"INSERT INTO analysis_results ({columns[0]}, analysis_type, provider) "
            f"VALUES ('{taken}', 'caption', 'raw')",
        )
    api_works(project, url, API)


def test_a_renamed_primary_key_column_keeps_the_table_keyed_at_every_step(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)

    edit(models, (DECLARED, RENAMED))
    ok(["make", "revision", "M=rename analysis_results.id"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, PRIMARY_KEY) == "PRIMARY KEY (id)"
    assert_no_drift(ok(["make", "verify"], env, project))
    writes_by_either_name(project, url, ("id", "result_id"))
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (RENAMED, CONTRACTED))
    ok(["make", "revision", "M=contract result_id"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, PRIMARY_KEY) == "PRIMARY KEY (result_id)"
    assert_no_drift(ok(["make", "verify"], env, project))
    writes_by_either_name(project, url, ("result_id",))
    down_to(project, url, expanded)
    down_to(project, url, before)
