"""A rewriting type change carries the column's indexes, CHECKs and comment to the new column
(media_db/dependents.py): after the cutover the models' names are on the live column and
enforced there, the old column's copies wait as `<name>__old`, `make verify` sees no drift, and
every step goes down to exactly what it came from; a UNIQUE constraint travels through an index
built CONCURRENTLY. What cannot follow a column, retyped or renamed (a view), is refused, named.

The columns are the test's own (`probe_size` with its CHECK and index, `probe_serial`,
`probe_code`): a user's change to ours must not break the test.
"""

import itertools
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError

from media_db.pool import conninfo
from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    catalog_is,
    down_to,
    execute,
    migrate,
    ok,
    probe_project,
    revision_text,
    scalar,
    writing,
)
from tests.conftest import FreshDatabase
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run

SIZE = 'probe_size: Mapped[int | None] = mapped_column(comment="bytes, as probed")'
WIDENED = (
    "probe_size: Mapped[int | None] = mapped_column(BigInteger, "
    'comment="bytes, as probed", info={"using": "probe_size::bigint"})'
)
CONTRACTED = (
    'probe_size: Mapped[int | None] = mapped_column(BigInteger, comment="bytes, as probed")'
)
CHECK, INDEX = "media_items_probe_size_check", "media_items_probe_size_idx"
OBJECTS = """
    SELECT con.conname::text, a.attname::text, con.convalidated
    FROM pg_constraint con
    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
    WHERE con.conrelid = 'media_items'::regclass AND con.contype = 'c'
      AND a.attname LIKE 'probe_size%%'
    UNION ALL
    SELECT i.relname::text, a.attname::text, x.indisvalid
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)
    WHERE x.indrelid = 'media_items'::regclass AND a.attname LIKE 'probe_size%%'
"""


def objects(url: URL) -> dict[str, tuple[str, bool]]:
    """{index or CHECK name: (the column it is on, valid)} for probe_size's."""
    with psycopg.connect(conninfo(url)) as connection:
        rows = connection.execute(OBJECTS).fetchall()
    return {name: (column, valid) for name, column, valid in rows}


def probe_size_column(models: Path, url: URL) -> None:
    model_edits.existing_column(
        models,
        url,
        "MediaItem",
        SIZE,
        "ALTER TABLE media_items ADD COLUMN probe_size integer; "
        "COMMENT ON COLUMN media_items.probe_size IS 'bytes, as probed'; "
        f"ALTER TABLE media_items ADD CONSTRAINT {CHECK} CHECK (probe_size >= 0); "
        f"CREATE INDEX {INDEX} ON media_items (probe_size)",
    )
    check = 'CheckConstraint("probe_size >= 0", "probe_size")'
    model_edits.add_table_arg(models, "MediaItem", check)
    model_edits.add_table_arg(models, "MediaItem", f'Index("{INDEX}", "probe_size")')


def test_widening_carries_the_check_index_and_comment_and_round_trips(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    probe_size_column(models, url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_size) "
        "SELECT 's' || g, 'seed', g FROM generate_series(1, 12000) g",
    )
    before = snapshot(url)
    edit(models, (SIZE, WIDENED))

    ok(["make", "revision", "M=widen probe_size"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX}__new" in expand
    # As the models declare it (probe_size >= 0), over the new column: what a fresh database has.
    assert f"ADD CONSTRAINT {CHECK}__new CHECK (probe_size__new >= 0) NOT VALID" in expand

    def inserts(n: int) -> list[tuple[str, dict[str, object]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_size) "
                "VALUES ('w', 'writer', %(n)s)",
                {"n": n},
            )
        ]

    with writing(url, inserts):
        migrate(project, url, "upgrade", "head")
    assert objects(url) == {
        CHECK: ("probe_size", True),
        INDEX: ("probe_size", True),
        f"{CHECK}__old": ("probe_size__old", True),
        f"{INDEX}__old": ("probe_size__old", True),
    }
    assert scalar(
        url,
        "SELECT col_description(attrelid, attnum) FROM pg_attribute "
        "WHERE attrelid = 'media_items'::regclass AND attname = 'probe_size'",
    ) == ("bytes, as probed")
    # The models' CHECK holds on the live column, whoever writes.
    with pytest.raises(IntegrityError, match=CHECK):
        execute(
            url,
            "INSERT INTO media_items (source_url, source_type, probe_size) VALUES ('x', 'x', -1)",
        )
    verified = ok(["make", "verify"], env, project)
    assert_no_drift(verified)
    assert "retype media_items.probe_size" in verified
    expanded = snapshot(url)

    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")
    catalog_is(url, expanded)

    edit(models, (WIDENED, CONTRACTED))
    ok(["make", "revision", "M=contract probe_size"], env, project)
    migrate(project, url, "upgrade", "head")
    assert objects(url) == {CHECK: ("probe_size", True), INDEX: ("probe_size", True)}
    assert_no_drift(ok(["make", "verify"], env, project))

    with writing(url, inserts):
        down_to(project, url, expanded)
    down_to(project, url, before)


SERIAL = "probe_serial: Mapped[int | None] = mapped_column(unique=True)"
SERIAL_WIDENED = (
    "probe_serial: Mapped[int | None] = mapped_column(BigInteger, unique=True, "
    'info={"using": "probe_serial::bigint"})'
)
UNIQUE_KEY = "media_items_probe_serial_key"
UNIQUES = """
    SELECT con.conname::text, a.attname::text FROM pg_constraint con
    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)
    WHERE con.conrelid = 'media_items'::regclass AND con.contype = 'u'
      AND a.attname LIKE 'probe_serial%%'
"""


def test_widening_carries_a_unique_constraint_through_its_index_and_round_trips(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        SERIAL,
        f"ALTER TABLE media_items ADD COLUMN probe_serial integer CONSTRAINT {UNIQUE_KEY} UNIQUE",
    )
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_serial) "
        "SELECT 's' || g, 'seed', g FROM generate_series(1, 6000) g",
    )
    before = snapshot(url)
    edit(models, (SERIAL, SERIAL_WIDENED))
    ok(["make", "revision", "M=widen probe_serial"], env, project)
    assert f"ADD CONSTRAINT {UNIQUE_KEY} UNIQUE USING INDEX {UNIQUE_KEY}__new" in revision_text(
        project, NEXT_REVISION
    )

    def inserts(n: int) -> list[tuple[str, dict[str, object]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_serial) "
                "VALUES ('w', 'writer', %(n)s)",
                {"n": 1_000_000 + n},
            )
        ]

    with writing(url, inserts):
        migrate(project, url, "upgrade", "head")
    with psycopg.connect(conninfo(url)) as connection:
        uniques: dict[str, str] = dict(connection.execute(UNIQUES).fetchall())
    assert uniques == {UNIQUE_KEY: "probe_serial", f"{UNIQUE_KEY}__old": "probe_serial__old"}
    with pytest.raises(IntegrityError, match=UNIQUE_KEY):
        execute(
            url,
            "INSERT INTO media_items (source_url, source_type, probe_serial) VALUES ('d', 'd', 7)",
        )
    assert_no_drift(ok(["make", "verify"], env, project))
    expanded = snapshot(url)
    down_to(project, url, before)
    migrate(project, url, "upgrade", "head")

    edit(models, (SERIAL_WIDENED, SERIAL.replace("unique=True", "BigInteger, unique=True")))
    ok(["make", "revision", "M=contract probe_serial"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)
    down_to(project, url, before)


# Its type given: left out, it would follow the referenced column's (a second type change in
# the first revision).
SERIAL_REFERENCE = (
    "probe_serial_ref: Mapped[int | None] = "
    'mapped_column(Integer, ForeignKey("media_items.probe_serial", ondelete="CASCADE"))'
)
REFERENCE = "media_items_probe_serial_ref_fkey"
REFERENCE_DEFINITION = f"""
    SELECT pg_get_constraintdef(oid) || ' ' || convalidated FROM pg_constraint
    WHERE conname = '{REFERENCE}'
"""
# Another table's foreign key to media_items would make the models' relationship()s between the
# two ambiguous: the test's reference is media_items' own.
REFERENCING_ITEM = (
    "INSERT INTO media_items (source_url, source_type, probe_serial_ref) "
    "SELECT 'r', 'referencing', probe_serial FROM media_items WHERE probe_serial = {serial}"
)


def reference_holds(url: URL, serial: int) -> None:
    """The foreign key is enforced (an item naming no item's serial is refused, by its name)
    and acts (deleting the item with `serial` deletes the items naming it), over the live
    column."""
    assert scalar(url, REFERENCE_DEFINITION) == (
        "FOREIGN KEY (probe_serial_ref) REFERENCES media_items(probe_serial) ON DELETE CASCADE true"
    )
    with pytest.raises(IntegrityError, match=REFERENCE):
        execute(
            url,
            "INSERT INTO media_items (source_url, source_type, probe_serial_ref) "
            "VALUES ('r', 'referencing', -1)",
        )
    execute(url, REFERENCING_ITEM.format(serial=serial))
    execute(url, f"DELETE FROM media_items WHERE probe_serial = {serial}")
    assert scalar(url, f"SELECT count(*) FROM media_items WHERE probe_serial_ref = {serial}") == 0


def test_widening_a_referenced_unique_column_carries_the_foreign_keys_referencing_it(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """integer to bigint on a UNIQUE column a foreign key references (the classic serial to
    bigint): the foreign key gets a copy over the new column's unique index (NOT VALID, then
    VALIDATE), which takes its name at the cutover; the way down puts it back on the old
    column. Then the referencing column, whose foreign key travels with it. It holds at every
    step, with writers of both shapes running."""
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        SERIAL,
        f"ALTER TABLE media_items ADD COLUMN probe_serial integer CONSTRAINT {UNIQUE_KEY} UNIQUE",
    )
    model_edits.add_import(models, "from sqlalchemy import Integer")
    model_edits.existing_column(
        models,
        url,
        "MediaItem",
        SERIAL_REFERENCE,
        f"ALTER TABLE media_items ADD COLUMN probe_serial_ref integer CONSTRAINT {REFERENCE} "
        "REFERENCES media_items (probe_serial) ON DELETE CASCADE",
    )
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_serial) "
        "SELECT 's' || g, 'seed', g FROM generate_series(1, 3000) g",
    )
    execute(url, REFERENCING_ITEM.format(serial="ANY(ARRAY(SELECT generate_series(1, 1000)))"))
    before = snapshot(url)
    edit(models, (SERIAL, SERIAL_WIDENED))
    ok(["make", "revision", "M=widen probe_serial"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert f"ADD CONSTRAINT {REFERENCE}__new FOREIGN KEY (probe_serial_ref) REFERENCES" in expand
    assert f"RENAME CONSTRAINT {REFERENCE}__new TO {REFERENCE}" in expand

    serials = itertools.count(1_000_000)  # one per round, across every writing() below

    def inserts(n: int) -> list[tuple[str, dict[str, object]]]:
        serial = next(serials)
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_serial) "
                "VALUES ('w', 'writer', %(s)s)",
                {"s": serial},
            ),
            (
                "INSERT INTO media_items (source_url, source_type, probe_serial_ref) "
                "VALUES ('w', 'referencing writer', %(s)s)",
                {"s": serial},
            ),
        ]

    with writing(url, inserts):
        migrate(project, url, "upgrade", "head")
    reference_holds(url, 7)
    assert_no_drift(ok(["make", "verify"], env, project))
    expanded = snapshot(url)
    with writing(url, inserts):
        migrate(project, url, "downgrade", "-1")
    catalog_is(url, before)
    reference_holds(url, 8)
    migrate(project, url, "upgrade", "head")

    edit(models, (SERIAL_WIDENED, SERIAL.replace("unique=True", "BigInteger, unique=True")))
    ok(["make", "revision", "M=contract probe_serial"], env, project)
    migrate(project, url, "upgrade", "head")
    reference_holds(url, 9)
    assert_no_drift(ok(["make", "verify"], env, project))
    down_to(project, url, expanded)
    reference_holds(url, 10)
    migrate(project, url, "upgrade", "head")

    # Then the referencing column: its foreign key travels with it, NOT VALID then VALIDATE.
    widened = snapshot(url)
    referencing = SERIAL_REFERENCE.replace("Integer", "BigInteger").replace(
        '"CASCADE")', '"CASCADE"), info={"using": "probe_serial_ref::bigint"}'
    )
    edit(models, (SERIAL_REFERENCE, referencing))
    ok(["make", "revision", "M=widen probe_serial_ref"], env, project)
    [path] = (project / "alembic" / "versions").glob("*_widen_probe_serial_ref.py")
    assert f"{REFERENCE}__new FOREIGN KEY (probe_serial_ref__new)" in revision_text(
        project, path.name.split("_")[3]
    )
    with writing(url, inserts):
        migrate(project, url, "upgrade", "head")
    reference_holds(url, 11)
    assert_no_drift(ok(["make", "verify"], env, project))
    with writing(url, inserts):
        migrate(project, url, "downgrade", "-1")
    catalog_is(url, widened)
    reference_holds(url, 12)
    migrate(project, url, "upgrade", "head")
    assert scalar(url, REFERENCE_DEFINITION).endswith(" true")
    assert (
        scalar(
            url,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'media_items'::regclass AND attname = 'probe_serial_ref'",
        )
        == "bigint"
    )


CODE = "probe_code: Mapped[str | None] = mapped_column(String(20), unique=True)"
CANNOT_FOLLOW = [
    (
        'probe_code: Mapped[int | None] = mapped_column(unique=True, info={"using": '
        '"probe_code::integer", "down": "probe_code::text"})',
        "alter_column media_items.probe_code type VARCHAR(20) to INTEGER: view probe_codes "
        "depends on it",
    ),
    (
        "probe_tag: Mapped[str | None] = "
        'mapped_column(String(20), unique=True, info={"renamed_from": "probe_code"})',
        "add_column media_items.probe_tag (renamed from probe_code): view probe_codes depends "
        "on it",
    ),
]


@pytest.mark.parametrize(("changed", "message"), CANNOT_FOLLOW, ids=["retype", "rename"])
def test_what_cannot_follow_a_retyped_or_renamed_column_is_refused_by_name(
    changed: str, message: str, tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
    model_edits.existing_column(
        models,
        url,
        "MediaItem",
        CODE,
        "ALTER TABLE media_items ADD COLUMN probe_code varchar(20) "
        "CONSTRAINT media_items_probe_code_key UNIQUE; "
        # Someone's report over it (views are nobody's model).
        "CREATE VIEW probe_codes AS SELECT probe_code FROM media_items",
    )
    edit(models, (CODE, changed))
    made = run(["make", "revision", "M=probe_code"], environment(url), cwd=project)
    assert made.returncode != 0
    output = " ".join((made.stdout + made.stderr).split())
    assert message in output, output
    assert not list((project / "alembic" / "versions").glob(f"*_{NEXT_REVISION}_*"))
