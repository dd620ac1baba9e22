"""`make revision` writes the lock-safe form of each schema change on an existing table and
refuses, naming the expand/contract steps, the changes that have none.

For each kind of change, in a throwaway copy of the project: edit the model, `make revision`,
then upgrade, `make verify`, downgrade (back to exactly the previous catalog) and upgrade
again. The revision is taken as written: nobody edits it. No test names a revision that does
not exist yet: the next id is computed from the head.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool

from media_db.deploy import catalog
from tests import model_edits
from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run

WORKFLOW_TYPE = "    workflow_type: Mapped[str] = mapped_column(String(50))\n"
MIME_TYPE = "    mime_type: Mapped[str | None] = mapped_column(String(100))\n"
CONCURRENT_BUILD = (
    r"with op\.get_context\(\)\.autocommit_block\(\):\n\s+op\.create_index\(\n"
    r"\s+(?:op\.f\()?\"{name}\"\)?,\n(?:.*\n)*?\s+postgresql_concurrently=True,\n"
    r"\s+if_not_exists=True,"
)


Edit = Callable[[Path], None]  # applied to models/media.py


def replace(*replacements: tuple[str, str]) -> Edit:
    """Our own model lines changed (a column of ours made NOT NULL, widened, dropped)."""
    return lambda models: edit(models, *replacements)


def column(model: str, source: str) -> Edit:
    return lambda models: model_edits.add_column(models, model, source)


def table_arg(model: str, source: str, *imports: str) -> Edit:
    def apply(models: Path) -> None:
        for line in imports:
            model_edits.add_import(models, line)
        model_edits.add_table_arg(models, model, source)

    return apply


@dataclass(frozen=True)
class Change:
    kind: str
    edit: Edit
    upgrade: list[str]  # patterns the upgrade() body must contain
    downgrade: list[str] = field(default_factory=list)
    locks: str = ""  # in the docstring's Locks: lines
    probe: bool = False  # changes model_edits.PROBE_PATH, which is in place first


SAFE = [
    Change(
        "nullable column",
        column("MediaItem", "probe_path: Mapped[str | None] = mapped_column(String(500))"),
        [
            # IF NOT EXISTS: a later step that commits on its own and fails leaves it there.
            r'op\.add_column\(\s*"media_items",\s*'
            r'sa\.Column\("probe_path", sa\.String\(length=500\), nullable=True\),\s*'
            r"if_not_exists=True,"
        ],
        [r'op\.drop_column\("media_items", "probe_path"\)'],
        "add_column media_items.probe_path: ACCESS EXCLUSIVE, briefly: a catalog update",
    ),
    Change(
        "not null column with a constant default",
        column("MediaItem", 'view_count: Mapped[int] = mapped_column(server_default=text("0"))'),
        [
            r'sa\.Column\("view_count", sa\.Integer\(\), server_default=sa\.text\("0"\), '
            r"nullable=False\)"
        ],
        [r'op\.drop_column\("media_items", "view_count"\)'],
        "add_column media_items.view_count: ACCESS EXCLUSIVE, briefly: a catalog update",
    ),
    Change(
        "index",
        table_arg("MediaItem", 'Index("idx_media_items_probe_mime_type", "mime_type")'),
        [CONCURRENT_BUILD.format(name="idx_media_items_probe_mime_type")],
        [r"postgresql_concurrently=True,\n\s+if_exists=True"],
        "create_index idx_media_items_probe_mime_type CONCURRENTLY",
    ),
    Change(
        "index dropped",
        replace(('        Index("idx_media_items_source_type", "source_type"),\n', "")),
        [r"op\.drop_index\(\n(?:.*\n)*?\s+postgresql_concurrently=True,\n\s+if_exists=True"],
        [CONCURRENT_BUILD.format(name="idx_media_items_source_type")],
        "drop_index idx_media_items_source_type CONCURRENTLY",
    ),
    Change(
        "unique constraint",
        table_arg(
            "MediaItem", 'UniqueConstraint("local_path")', "from sqlalchemy import UniqueConstraint"
        ),
        [
            r'op\.drop_constraint\(\s*op\.f\("media_items_local_path_key"\), "media_items", '
            r'type_="unique", if_exists=True',
            r"unique=True,\n\s+postgresql_concurrently=True,\n\s+if_not_exists=True",
            r'"ALTER TABLE media_items ADD CONSTRAINT media_items_local_path_key UNIQUE '
            r'USING INDEX media_items_local_path_key"',
        ],
        [
            r'op\.drop_constraint\(\s*op\.f\("media_items_local_path_key"\), "media_items", '
            r'type_="unique"'
        ],
        "unique constraint media_items_local_path_key on media_items: its index is built "
        "CONCURRENTLY",
    ),
    Change(
        "check constraint",
        table_arg("MediaItem", 'CheckConstraint("width <= 100000", name="max_width")'),
        [
            r'"width <= 100000",\n\s+postgresql_not_valid=True',
            r"autocommit_block\(\):\n\s+op\.execute\(\s*\"ALTER TABLE media_items VALIDATE "
            r'CONSTRAINT media_items_max_width_check"',
        ],
        [
            r'op\.drop_constraint\(\s*op\.f\("media_items_max_width_check"\), "media_items", '
            r'type_="check"'
        ],
        "check constraint media_items_max_width_check on media_items: ADD ... NOT VALID takes",
    ),
    Change(
        "foreign key",
        column(
            "ProcessingJob",
            "analysis_result_id: Mapped[uuid.UUID | None] = "
            'mapped_column(ForeignKey("analysis_results.id"))',
        ),
        [
            r'\["analysis_result_id"\],\n\s+\["id"\],\n\s+postgresql_not_valid=True',
            r"VALIDATE CONSTRAINT processing_jobs_analysis_result_id_fkey",
        ],
        [r'op\.drop_column\("processing_jobs", "analysis_result_id"\)'],
        "foreign key processing_jobs_analysis_result_id_fkey on processing_jobs: ADD ... NOT VALID "
        "takes SHARE ROW EXCLUSIVE",
    ),
    Change(
        "set not null",
        replace((MIME_TYPE, MIME_TYPE.replace("str | None", "str"))),
        [
            r'"mime_type IS NOT NULL",\n\s+postgresql_not_valid=True',
            r"VALIDATE CONSTRAINT media_items_mime_type_not_null_check",
            r'"mime_type",\s+existing_type=sa\.VARCHAR\(length=100\),\s+nullable=False',
            r'op\.f\("media_items_mime_type_not_null_check"\), "media_items", type_="check"\)\n',
        ],
        [r"nullable=True"],
        "media_items.mime_type SET NOT NULL: a CHECK (mime_type IS NOT NULL) is added NOT VALID",
    ),
    Change(
        "varchar widened",
        replace((WORKFLOW_TYPE, WORKFLOW_TYPE.replace("50", "100"))),
        [r"existing_type=sa\.VARCHAR\(length=50\),\n\s+type_=sa\.String\(length=100\)"],
        [r"type_=sa\.VARCHAR\(length=50\)"],
        "VARCHAR(50) to VARCHAR(100) is binary-compatible",
    ),
    Change(
        "varchar to text",
        replace((WORKFLOW_TYPE, WORKFLOW_TYPE.replace("String(50)", "Text"))),
        [r"existing_type=sa\.VARCHAR\(length=50\),\n\s+type_=sa\.Text\(\)"],
        [r"type_=sa\.VARCHAR\(length=50\)"],
        "VARCHAR(50) to TEXT is binary-compatible",
    ),
    Change(
        "column dropped",
        replace((model_edits.PROBE_PATH_LINE, "")),
        [r'op\.drop_column\("media_items", "probe_path"\)'],
        [r'op\.add_column\(\s*"media_items",\s*sa\.Column\("probe_path", sa\.TEXT\(\)'],
        "drop_column media_items.probe_path: ACCESS EXCLUSIVE, briefly; under it the data-loss "
        "guard",
        probe=True,
    ),
]

SAFE.append(
    Change(
        "storage parameters",
        lambda models: model_edits.add_table_option(
            models, "MediaItem", "postgresql_with", '{"autovacuum_vacuum_scale_factor": 0.05}'
        ),
        [r'"ALTER TABLE media_items SET \(autovacuum_vacuum_scale_factor = 0\.05\)"'],
        [r'"ALTER TABLE media_items RESET \(autovacuum_vacuum_scale_factor\)"'],
        "storage parameters autovacuum_vacuum_scale_factor of media_items: SHARE UPDATE "
        "EXCLUSIVE, reads and writes continue",
    )
)

SAFE.append(
    Change(
        "new table",
        lambda models: model_edits.append(
            models,
            "class ProbeItem(Base):\n"
            '    __tablename__ = "probe_items"\n'
            # An index of the new table: it comes with the table, nothing is reflected.
            '    __table_args__ = (Index("idx_probe_items_media_item_id", "media_item_id"),)'
            "\n\n"
            "    id: Mapped[uuid.UUID] = mapped_column(\n"
            "        primary_key=True, server_default=NEW_UUID\n"
            "    )\n"
            "    media_item_id: Mapped[uuid.UUID] = mapped_column(\n"
            '        ForeignKey("media_items.id", ondelete="CASCADE")\n'
            "    )\n"
            "    path: Mapped[str] = mapped_column(Text)\n",
        ),
        [
            r'drops_tables = \(\s*"probe_items",\s*\)',
            r'op\.create_table\(\s*"probe_items"',
            r"sa\.ForeignKeyConstraint\(",
            r'"idx_probe_items_media_item_id"',
        ],
        [r'op\.drop_table\("probe_items"\)'],
        "create_table probe_items: a new table; its foreign keys take SHARE ROW EXCLUSIVE on "
        "media_items, briefly",
    )
)

# Each refusal names the marker that would let make revision write it as expand/contract
# (tests/autogen/test_expand_contract_keeps_every_writer.py).
REFUSED = [
    (
        "not null column without a default",
        column("MediaItem", "view_count: Mapped[int]"),
        "add_column media_items.view_count: NOT NULL with no server default: existing rows have "
        "no value to hold. Expand/contract instead: mark the column with info={'backfill': "
        "'<SQL expression over the row>'}",
    ),
    (
        "type change its CHECK cannot follow",
        replace(
            (
                "    width: Mapped[int | None]\n",
                "    width: Mapped[str | None] = mapped_column(Text)\n",
            )
        ),
        "alter_column media_items.width type INTEGER to TEXT: check media_items_width_check "
        "(CHECK ((width > 0))) cannot be carried to TEXT: operator does not exist: text > integer",
    ),
    (
        "narrowing with no way back",
        replace(
            (
                "    file_size: Mapped[int | None] = mapped_column(BigInteger)\n",
                "    file_size: Mapped[int | None]\n",
            )
        ),
        "alter_column media_items.file_size type BIGINT to INTEGER: only a widening comes back "
        "exactly by a cast, and a rollback must restore what each writer wrote. Expand/contract "
        "instead: mark the column with info={'using': ..., 'down': ",
    ),
    (
        "a type change's marker on a new column",
        column(
            "MediaItem",
            'probe_text: Mapped[str | None] = mapped_column(Text, info={"using": "probe_path"})',
        ),
        "add_column media_items.probe_text: info 'using' marks a type change of a column the "
        "table has, and probe_text is new to it. Expand/contract instead: to rename a column, "
        "give info={'renamed_from': '<its name now>'} beside 'using'",
    ),
    (
        "rename",
        replace(
            (
                model_edits.PROBE_PATH_LINE,
                model_edits.PROBE_PATH_LINE.replace("probe_path", "probe_file"),
            )
        ),
        "media_items: probe_path dropped and probe_file added, both TEXT: autogenerate sees a "
        "rename as a drop and an add, which loses probe_path's data. Expand/contract instead: "
        "mark probe_file with info={'renamed_from': 'probe_path'}",
    ),
]


def snapshot(url: URL) -> catalog.Catalog:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return catalog.snapshot(connection)


def written(project: Path) -> str:
    [revision] = (project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*.py")
    return revision.read_text()


@pytest.mark.parametrize("change", SAFE, ids=lambda change: change.kind)
def test_safe_form_is_written_and_round_trips(
    change: Change, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    if change.probe:
        model_edits.existing_probe_path(project / "models" / "media.py", url)
    before = snapshot(url)
    env = environment(url)
    change.edit(project / "models" / "media.py")

    made = run(["make", "revision", f"M={change.kind}"], env, cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
    source = written(project)
    docstring, body = source.split('"""', 2)[1:]
    body = re.sub(r'"\s+"', "", body)  # one string where ruff split a long one in pieces
    upgrade, downgrade = body.split("def downgrade() -> None:")
    for pattern in change.upgrade:
        assert re.search(pattern, upgrade), f"upgrade() lacks {pattern!r}:\n{upgrade}"
    for pattern in change.downgrade:
        assert re.search(pattern, downgrade), f"downgrade() lacks {pattern!r}:\n{downgrade}"
    assert change.locks in " ".join(docstring.split()), docstring
    assert "# ###" not in source, "Alembic's 'please adjust' markers are left out"

    # The round trip runs in process: what it tests is the revision, not the alembic command
    # (tests/deploy covers that); `make verify` reads the copy's own models.
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(config_for(project, connection), "head")
    verified = run(["make", "verify"], env, cwd=project)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.downgrade(config_for(project, connection), "-1")
        assert catalog.differences(before, catalog.snapshot(connection), set(before)) == []
        command.upgrade(config_for(project, connection), "head")


@pytest.mark.parametrize(("kind", "change", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_change_without_a_safe_form_is_refused(
    kind: str,
    change: Edit,
    message: str,
    tmp_path: Path,
    head_copy: FreshDatabase,
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    model_edits.existing_probe_path(project / "models" / "media.py", url)
    change(project / "models" / "media.py")
    made = run(["make", "revision", f"M={kind}"], environment(url), cwd=project)
    assert made.returncode != 0
    output = " ".join((made.stdout + made.stderr).split())
    assert message in output, output
    assert "Expand/contract instead" in output
    assert not list((project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*"))
