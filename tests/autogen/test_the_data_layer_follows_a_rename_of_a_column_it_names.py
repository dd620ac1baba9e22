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


STATUS = """    status: Mapped[JobStatus] = mapped_column(
        StatusColumn(JobStatus, 20),
        server_default=text(f"'{JobStatus.QUEUED}'"),
        info=SET_BY_REPOSITORY,"""
STATE = """    status: Mapped[JobStatus] = mapped_column(
        "state",
        StatusColumn(JobStatus, 20),
        server_default=text(f"'{JobStatus.QUEUED}'"),
        key="status",
        info={**SET_BY_REPOSITORY, "renamed_from": "status"},"""
# Every SQL text of ProcessingJob naming the column: its partial indexes' WHEREs and its CHECK.
STATUS_TEXTS = [
    ("text(\"status = 'queued'\")", "text(\"state = 'queued'\")"),
    ("text(\"status = 'running'\")", "text(\"state = 'running'\")"),
    ("text(\"status IN ('completed',", "text(\"state IN ('completed',"),
    ("AND status IN ('queued', 'running')", "AND state IN ('queued', 'running')"),
    (
        'CheckConstraint(one_of(JobStatus), name="status")',
        'CheckConstraint(one_of(JobStatus).replace("status", "state"), name="status")',
    ),
]
JOB_INDEXES = (
    "SELECT coalesce(jsonb_object_agg(c.relname, pg_get_indexdef(c.oid)), '{}') FROM pg_index x "
    "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = 'processing_jobs'::regclass"
)
QUEUE = """
        queue = JobQueue(db)
        job = await queue.enqueue("transcode", dedupe_key=sys.argv[2])
        again = await queue.enqueue("transcode", dedupe_key=sys.argv[2])
        assert again.id == job.id, (job, again)
        done, claimed = await queue.complete_and_claim([], 5)
        assert [found.id for found in claimed] == [job.id], claimed
"""


def test_the_queue_follows_a_rename_of_its_status_column(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """`processing_jobs.status`, which the claim, the partial indexes (their WHERE), the CHECK,
    the dedupe index and the limits' function all name: the expand carries every index and the
    CHECK to the new column under their names, the queue claims and dedupes through them at
    every step, the contract waits for the function to name the new column, and no index is
    lost at the contract."""
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)
    indexed = scalar(url, JOB_INDEXES)
    edit(models, (STATUS, STATE))
    source = models.read_text()
    for old, new in STATUS_TEXTS:  # some appear more than once
        assert old in source, old
        source = source.replace(old, new)
    models.write_text(source)
    ok(["make", "revision", "M=rename status"], env, project)
    migrate(project, url, "upgrade", "head")
    carried = scalar(url, JOB_INDEXES)
    assert {name for name in carried if not name.endswith("__old")} == set(indexed)
    stale = {
        name: definition
        for name, definition in carried.items()
        if "status" in definition.partition(" USING ")[2] and not name.endswith("__old")
    }
    assert stale == {}, "an index still names the old column"
    assert_no_drift(ok(["make", "verify"], env, project))
    api_works(project, url, QUEUE, "expanded")
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, ('info={**SET_BY_REPOSITORY, "renamed_from": "status"}', "info=SET_BY_REPOSITORY"))
    # The limits' function still reads the old name: the contract would break it, unsaid.
    refused = run(["make", "revision", "M=contract state"], env, cwd=project)
    assert refused.returncode != 0, refused.stdout
    assert "processing_limits_room(" in refused.stdout + refused.stderr, refused.stderr
    triggers = project / "models" / "triggers.py"
    edit(triggers, ("WHERE status = 'running'", "WHERE state = 'running'"))
    ok(["make", "revision", "M=contract state"], env, project)
    migrate(project, url, "upgrade", "head")
    assert set(scalar(url, JOB_INDEXES)) == set(indexed), "an index was lost"
    assert_no_drift(ok(["make", "verify"], env, project))
    api_works(project, url, QUEUE, "contracted")
    down_to(project, url, expanded)
