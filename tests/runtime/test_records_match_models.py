"""The models are the one truth: the committed records are what `make records` writes from them
(a field per column, in table order, typed from the model); NewMedia names every column the
server does not set, and follows a model change at once; the claim is served by the model's
claim index; a column added to a model reaches its record and every SELECT after `make records`
(which every `alembic revision` runs, as a post-write hook:
tests/autogen/test_stock_revision_commands_number_and_regenerate.py)."""

import asyncio
import json
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, pool, text

from media_db import JobQueue, NewAnalysis, NewJob, NewMedia
from media_db.dev.gen_records import RECORDS, RECORDS_FILE, render
from media_db.models import AnalysisResult, MediaItem
from media_db.pool import Database
from media_db.repositories import jobs
from media_db.statements import table_of
from tests import model_edits
from tests.helpers import REPO_ROOT, environment, generic_plan, project_copy, run


def test_committed_records_are_what_the_models_generate() -> None:
    assert RECORDS_FILE.read_text() == render(), "records.py is stale: run `make records`"


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_record_fields_are_the_table_columns(record: str) -> None:
    import media_db.records

    kind = getattr(media_db.records, record)
    table = table_of(RECORDS[record])
    assert [field.name for field in fields(kind)] == [column.key for column in table.columns]


@pytest.mark.parametrize(("kind", "model"), [(NewMedia, MediaItem), (NewAnalysis, AnalysisResult)])
def test_an_input_names_every_column_neither_the_server_nor_the_repository_sets(
    kind: type, model: type
) -> None:
    table = table_of(model)
    settable = [c.key for c in table.columns if c.info.get("set_by") is None]
    assert [field.name for field in fields(kind)] == sorted(
        settable,
        key=lambda key: table.c[key].nullable or table.c[key].server_default is not None,
    ), f"{kind.__name__}: the required columns first, then the rest, each in table order"
    required = {c.key for c in table.columns if not c.nullable and c.server_default is None}
    assert required - {"id"} <= set(settable), "a required column is set by someone else"


WRITE_SIDE_FOLLOWS = """
from media_db import JobQueue, MediaRepository, NewMedia
from media_db.errors import InvalidInput
from media_db.repositories.media import COPY_MEDIA, checked

values = checked(NewMedia("u", "t", 3, probe_file="/f"))
assert values["probe_file"] == "/f" and values["probe_count"] == 3, values
assert "probe_file" in COPY_MEDIA and "probe_path" not in COPY_MEDIA, COPY_MEDIA
for bad in (None, 2**40, "3"):
    try:
        checked(NewMedia("u", "t", bad))
    except InvalidInput as error:
        assert error.field == "probe_count", error
    else:
        raise AssertionError(f"probe_count={bad!r} was taken")
from media_db import NewAnalysis
from media_db.repositories.analysis import NEW_ANALYSIS

analysis = NEW_ANALYSIS.checked(NewAnalysis("caption", "p", probe_model="m"))
assert analysis["probe_model"] == "m", analysis
assert "probe_model" in NEW_ANALYSIS.insert(tuple(analysis)), "the INSERT names the new column"

from media_db import NewJob
from media_db.repositories import jobs

job = dict(zip(jobs.ENQUEUE_COLUMNS, jobs.NEW_JOB.row(NewJob("t", probe_region="eu"))))
assert job["probe_region"] == "eu", job
assert "probe_region" in jobs.ENQUEUE and "probe_region" in jobs.ENQUEUE_MANY
try:
    NewMedia("u", "t")
except TypeError as error:
    assert "probe_count" in str(error), error
else:
    raise AssertionError("a required column could be left out")
"""


def test_the_write_side_follows_a_rename_a_new_column_and_a_required_one(
    tmp_path: Path,
) -> None:
    """`make records` (which `make revision` runs) regenerates the inputs (NewMedia,
    NewAnalysis, NewJob): a rename in flight is written by its new name, a new column can be
    set, a NOT NULL column with no default is required and checked from its type; `import
    media_db` holds throughout."""
    project = project_copy(tmp_path)
    models = project / "models" / "media.py"
    model_edits.add_column(
        models,
        "MediaItem",
        'probe_file: Mapped[str | None] = mapped_column(Text, info={"renamed_from": "probe_path"})',
    )
    model_edits.add_column(models, "MediaItem", "probe_count: Mapped[int]")
    model_edits.add_column(
        models, "AnalysisResult", "probe_model: Mapped[str | None] = mapped_column(Text)"
    )
    model_edits.add_column(
        models, "ProcessingJob", "probe_region: Mapped[str | None] = mapped_column(Text)"
    )

    made = run(["make", "-C", str(project), "records"], environment())
    assert made.returncode == 0, made.stdout + made.stderr
    probe = run(["python", "-c", WRITE_SIDE_FOLLOWS], environment(), cwd=project)
    assert probe.returncode == 0, probe.stderr


HELD_NONE: dict[str, list[str]] = {"ids": [], "tokens": []}


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        (jobs.CLAIM_ONE[False], {"lease": jobs.DEFAULT_LEASE}),
        (jobs.CLAIM_ONE[True], {"workflow_type": "transcode", "lease": jobs.DEFAULT_LEASE}),
        (jobs.claim_many_sql(10, False), {"lease": jobs.DEFAULT_LEASE}),
        (
            jobs.claim_many_sql(10, True),
            {"workflow_type": "transcode", "lease": jobs.DEFAULT_LEASE},
        ),
        (
            jobs.complete_and_claim_sql(10, True),
            {**HELD_NONE, "workflow_type": "transcode", "lease": jobs.DEFAULT_LEASE},
        ),
    ],
    ids=["claim", "claim by type", "claim 10", "claim 10 by type", "a worker's round"],
)
@pytest.mark.parametrize("planned", ["for its values", "once (generic plan)"])
def test_claims_use_the_claim_index(
    migrated: URL, statement: str, params: dict[str, object], planned: str
) -> None:
    async def fill() -> None:
        async with await Database.connect(migrated) as db:
            await JobQueue(db).enqueue_many(
                [
                    NewJob("transcode" if i % 2 else "thumbnail", priority=i % 10)
                    for i in range(20_000)
                ]
            )

    asyncio.run(fill())
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE processing_jobs SET status = 'completed' WHERE priority > 1")
        )
        connection.execute(text("ANALYZE processing_jobs"))
    if planned == "for its values":
        with engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            cursor = raw.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            plan = json.dumps(cursor.fetchone()[0])
            connection.rollback()
    else:
        # Claims write their batch size into the SQL so that PostgreSQL plans them once: the
        # plan it keeps must still go through the claim index.
        plan = json.dumps(generic_plan(migrated, statement, params))
    scoped = "workflow_type" in params
    claim_index = jobs.SCOPED_CLAIM_INDEX if scoped else jobs.CLAIM_INDEX
    assert f'"Index Name": "{claim_index.name}"' in plan, plan


def test_a_column_added_to_a_model_reaches_its_record_and_every_select(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    model_edits.add_column(
        project / "models" / "media.py",
        "MediaItem",
        "probe_path: Mapped[str | None] = mapped_column(Text)",
    )

    made = run(["make", "-C", str(project), "records"], environment())
    assert made.returncode == 0, made.stdout + made.stderr
    assert "    probe_path: str | None\n" in (project / "media_db" / "records.py").read_text()
    probe = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"),
            "-c",
            "from media_db.repositories import media; from media_db.records import MediaRecord;"
            "assert media.__file__.startswith('.') or 'project' in media.__file__, media.__file__;"
            "assert 'media_items.probe_path' in media.GET;"
            "assert 'probe_path' in MediaRecord.__slots__",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


UNANNOTATED = """

from sqlalchemy import Column, Integer

# Columns without a Mapped[...] annotation: appended to the table, and a bare Column. Their
# names are the test's own: a user's models may well have a `caption` or a `rating`.
MediaItem.__table__.append_column(Column("probe_untyped_note", Text))
MediaItem.probe_untyped_count = Column(Integer, nullable=False, server_default=text("0"))
"""


def test_a_column_without_an_annotation_is_typed_from_its_column_type(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    models = project / "models" / "media.py"
    models.write_text(models.read_text() + UNANNOTATED)

    made = run(["make", "-C", str(project), "records"], environment())
    assert made.returncode == 0, made.stdout + made.stderr
    records = (project / "media_db" / "records.py").read_text()
    assert "    probe_untyped_note: str | None\n" in records
    assert "    probe_untyped_count: int\n" in records


def test_a_column_whose_type_says_nothing_is_refused_in_one_line(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    models = project / "models" / "media.py"
    models.write_text(
        models.read_text()
        + "\nfrom sqlalchemy import Column\nfrom sqlalchemy.dialects.postgresql import INET\n"
        + 'MediaItem.__table__.append_column(Column("address", INET))\n'
    )
    before = (project / "media_db" / "records.py").read_text()

    made = run(["make", "-C", str(project), "records"], environment())
    assert made.returncode != 0
    refusal = [line for line in made.stderr.splitlines() if "make records:" in line]
    assert len(refusal) == 1, made.stderr
    assert "media_items.address" in refusal[0]
    assert "address: Mapped[" in refusal[0]
    assert "Traceback" not in made.stderr
    assert (project / "media_db" / "records.py").read_text() == before


EVERY_COLUMN_RENAMED = """
import re
from media_db.models import Base

# Each column of ours renamed in the database, its key kept (the form a rename of a column the
# code names takes, docs/schema-changes.md), before the data layer compiles its statements.
for table in Base.metadata.tables.values():
    for column in table.columns:
        column.name = f"renamed_{column.name}"

from media_db.repositories import analysis, jobs, media

statements = [
    value for module in (analysis, jobs, media) for value in vars(module).values()
    if isinstance(value, str) and re.match(r"\\s*(SELECT|INSERT|UPDATE|DELETE|WITH|COPY)", value)
]
statements += [jobs.claim_many_sql(3, by) for by in (False, True)]
statements += [jobs.complete_and_claim_sql(3, by) for by in (False, True)]
statements += [media.NEW_MEDIA.insert(("source_url", "source_type"))]
assert len(statements) > 20, len(statements)
for statement in statements:
    named = re.findall(r"\\b(?:media_items|analysis_results|processing_jobs)\\.(\\w+)", statement)
    stale = [name for name in named if not name.startswith("renamed_")]
    assert not stale, (stale, statement)
"""


def test_every_statement_names_a_column_by_its_key() -> None:
    """With every column renamed in the database (each keeping its key), the data layer imports
    and every statement it compiles names the new columns: none addresses one by name."""
    probe = run(["python", "-c", EVERY_COLUMN_RENAMED], environment())
    assert probe.returncode == 0, probe.stderr
