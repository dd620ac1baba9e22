"""Renaming the key other tables reference (`media_items.id`, which `analysis_results` and
`processing_jobs` point at with ON DELETE CASCADE): the expand builds the new column's unique
index and, beside each foreign key, one referencing the new column (NOT VALID, then VALIDATE);
the contract drops the old foreign keys with the old column, makes the index the primary key and
gives the new foreign keys their names, in one transaction. At every step a child row must name
an existing item by either name, a delete cascades, and the API works; each way down gives back
the catalog it came from."""

from pathlib import Path

import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError

from tests.autogen.test_a_primary_key_follows_its_renamed_column import id_renamed
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    CONTRACT_REVISION,
    assert_no_drift,
    down_to,
    execute,
    migrate,
    ok,
    scalar,
)
from tests.conftest import FreshDatabase
from tests.helpers import api_works, edit, environment, project_copy, run

DECLARED = """    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=NEW_UUID, info=SET_BY_SERVER
    )
    source_url"""
RENAMED, CONTRACTED = id_renamed(DECLARED, "item_id")
FOREIGN_KEYS = (
    "SELECT coalesce(jsonb_object_agg(conname, pg_get_constraintdef(oid)), '{}') "
    "FROM pg_constraint WHERE contype = 'f' AND confrelid = 'media_items'::regclass"
)
API = """
        media = MediaRepository(db)
        item = await media.create(NewMedia("s3://api", "upload"))
        assert (await media.get(item.id)) == item
        started = await AnalysisRepository(db).start(item.id, "caption", "api")
        job = await JobQueue(db).enqueue("transcode", media_item_id=item.id)
        try:
            await AnalysisRepository(db).start(sys.argv[2], "caption", "api")
        except NotFound:
            pass
        else:
            raise AssertionError("an analysis of a missing item was written")
        await media.delete(item.id)
        assert await AnalysisRepository(db).for_media_item(item.id) == []
        try:
            await JobQueue(db).get(job.id)
        except NotFound:
            pass
        else:
            raise AssertionError("the job outlived its item")
"""


def children_follow(project: Path, url: URL, names: tuple[str, ...]) -> None:
    """Raw writers naming the item by each name, a child of a missing item refused, a delete
    cascading; then the API."""
    for name in names:
        item = scalar(
            url,
            f"INSERT INTO media_items ({name}, source_url, source_type) "
            f"VALUES (gen_random_uuid(), 'r', 'r') RETURNING {name}",
        )
        execute(
            url,
            "INSERT INTO analysis_results (media_item_id, analysis_type, provider) "
            f"VALUES ('{item}', 'caption', 'raw')",
        )
        execute(
            url,
            f"INSERT INTO processing_jobs (media_item_id, workflow_type) VALUES ('{item}', 'raw')",
        )
        execute(url, f"DELETE FROM media_items WHERE {name} = '{item}'")
        assert (
            scalar(url, f"SELECT count(*) FROM processing_jobs WHERE media_item_id = '{item}'") == 0
        )
    with pytest.raises(IntegrityError):
        execute(
            url,
            "INSERT INTO analysis_results (media_item_id, analysis_type, provider) "
            "VALUES (gen_random_uuid(), 'caption', 'raw')",
        )
    api_works(project, url, API, "00000000-0000-0000-0000-000000000000")


def test_a_renamed_referenced_key_keeps_every_reference_at_every_step(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)

    edit(models, (DECLARED, RENAMED))
    ok(["make", "revision", "M=rename media_items.id"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, FOREIGN_KEYS) == {
        "analysis_results_media_item_id_fkey": "FOREIGN KEY (media_item_id) REFERENCES "
        "media_items(id) ON DELETE CASCADE",
        "analysis_results_media_item_id_fkey__new": "FOREIGN KEY (media_item_id) REFERENCES "
        "media_items(item_id) ON DELETE CASCADE",
        "processing_jobs_media_item_id_fkey": "FOREIGN KEY (media_item_id) REFERENCES "
        "media_items(id) ON DELETE CASCADE",
        "processing_jobs_media_item_id_fkey__new": "FOREIGN KEY (media_item_id) REFERENCES "
        "media_items(item_id) ON DELETE CASCADE",
    }
    assert_no_drift(ok(["make", "verify"], env, project))
    children_follow(project, url, ("id", "item_id"))
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (RENAMED, CONTRACTED))
    ok(["make", "revision", "M=contract item_id"], env, project)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, FOREIGN_KEYS) == {
        "analysis_results_media_item_id_fkey": "FOREIGN KEY (media_item_id) REFERENCES "
        "media_items(item_id) ON DELETE CASCADE",
        "processing_jobs_media_item_id_fkey": "FOREIGN KEY (media_item_id) REFERENCES "
        "media_items(item_id) ON DELETE CASCADE",
    }
    assert_no_drift(ok(["make", "verify"], env, project))
    children_follow(project, url, ("item_id",))
    down_to(project, url, expanded)
    # Cut at its last step (a VALIDATE), the way down is run again: it finishes the same.
    migrate(project, url, "stamp", CONTRACT_REVISION)
    down_to(project, url, expanded)
    down_to(project, url, before)


REFERENCING = """    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media_items.id", ondelete="CASCADE")
    )
    analysis_type"""


def test_a_key_and_a_column_referencing_it_renamed_together_are_refused_in_one_line(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """Each rename moves the foreign key between them by its own steps: together, the upgrade
    could not run (the new reference would name a column not there yet)."""
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
    versions = sorted((project / "alembic" / "versions").glob("*.py"))
    edit(
        models,
        (DECLARED, RENAMED),
        (
            REFERENCING,
            REFERENCING.replace(
                '        ForeignKey("media_items.id", ondelete="CASCADE")\n',
                '        "media_id",\n        ForeignKey("media_items.id", ondelete="CASCADE"),\n'
                '        key="media_item_id",\n        info={"renamed_from": "media_item_id"},\n',
            ),
        ),
    )
    made = run(["make", "revision", "M=rename both"], environment(url), cwd=project)
    said = made.stdout + made.stderr
    assert made.returncode != 0, said
    assert "Traceback" not in said, said
    refusal = [line for line in said.splitlines() if "renamed together" in line]
    assert len(refusal) == 1, said
    assert "analysis_results.media_item_id" in refusal[0], refusal
    assert sorted((project / "alembic" / "versions").glob("*.py")) == versions
