"""A column the data layer's own code names (`analysis_results.media_item_id`: the repositories
filter, insert and return by it) is renamed in the database, with its foreign key and index,
while n8n keeps writing the old name. The rename keeps the name the code uses as the column's key
(`mapped_column("media_id", key="media_item_id")`), so at every step, expand, contract and each
way down, `import media_db` holds and the API reads and writes the column, whatever its name
in the database is then. Renamed without the key, `make revision` refuses in one line naming
the form that works, and writes nothing."""

from pathlib import Path

from sqlalchemy import URL

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
from tests.helpers import api_works, edit, environment, project_copy, run

DECLARED = """    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("media_items.id", ondelete="CASCADE")
    )
    analysis_type"""
RENAMED = """    media_item_id: Mapped[uuid.UUID | None] = mapped_column(
        "media_id",
        ForeignKey("media_items.id", ondelete="CASCADE"),
        key="media_item_id",
        info={"renamed_from": "media_item_id"},
    )
    analysis_type"""
CONTRACTED = RENAMED.replace(',\n        info={"renamed_from": "media_item_id"}', "")
WITHOUT_KEY = RENAMED.replace('key="media_item_id",\n        ', "").replace(
    "    media_item_id: Mapped", "    media_id: Mapped"
)
# Without the key, the models' own index names the column by its new name.
INDEX_BY_NAME = (
    'Index("idx_analysis_results_media_id", "media_item_id")',
    'Index("idx_analysis_results_media_id", "media_id")',
)

# Through the API, in the project copy: start an analysis for a new item, read it back by the
# item (the filter on the renamed column), and see a raw writer's row by the item too.
API = """
        item = await MediaRepository(db).create(NewMedia("s3://api", "upload"))
        results = AnalysisRepository(db)
        started = await results.start(item.id, "caption", "api")
        assert started.media_item_id == item.id, started
        assert [r.id for r in await results.for_media_item(item.id)] == [started.id]
        latest = await results.latest_per_type_and_provider(item.id)
        assert [r.id for r in latest] == [started.id], latest
        raw = await results.for_media_item(sys.argv[2])
        assert [r.provider for r in raw] == ["raw"], raw
"""


def writes_and_reads(project: Path, url: URL, column: str) -> None:
    """The project's API, against the database as it stands, and a raw writer naming `column`."""
    item = scalar(
        url, "INSERT INTO media_items (source_url, source_type) VALUES ('r', 'raw') RETURNING id"
    )
    execute(
        url,
        f"INSERT INTO analysis_results ({column}, analysis_type, provider) "
        f"VALUES ('{item}', 'caption', 'raw')",
    )
    api_works(project, url, API, str(item))


def test_the_api_reads_and_writes_a_renamed_column_at_every_step(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env = environment(url)
    models = project / "models" / "media.py"
    before = snapshot(url)

    edit(models, (DECLARED, RENAMED))
    ok(["make", "revision", "M=rename media_item_id"], env, project)
    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)
    for column in ("media_item_id", "media_id"):  # n8n's old SQL, and the new name
        writes_and_reads(project, url, column)

    edit(models, (RENAMED, CONTRACTED))
    ok(["make", "revision", "M=contract media_item_id"], env, project)
    migrate(project, url, "upgrade", "head")
    writes_and_reads(project, url, "media_id")
    assert_no_drift(ok(["make", "verify"], env, project))

    down_to(project, url, expanded)
    writes_and_reads(project, url, "media_item_id")
    down_to(project, url, before)


def test_a_rename_that_drops_the_key_the_code_names_is_refused_in_one_line(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
    versions = sorted((project / "alembic" / "versions").glob("*.py"))
    records = (project / "media_db" / "records.py").read_text()

    edit(models, (DECLARED, WITHOUT_KEY), INDEX_BY_NAME)
    made = run(["make", "revision", "M=rename media_item_id"], environment(url), cwd=project)

    assert made.returncode != 0
    said = made.stdout + made.stderr
    assert "Traceback" not in said, said
    refusal = [line for line in said.splitlines() if "analysis_results.media_item_id" in line]
    assert len(refusal) == 1, said
    assert 'key="media_item_id"' in refusal[0], refusal
    assert sorted((project / "alembic" / "versions").glob("*.py")) == versions
    assert (project / "media_db" / "records.py").read_text() == records
