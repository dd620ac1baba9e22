"""`make revision` writes a rename, a NOT NULL column with a backfill, a volatile default and a
rewriting type change as expand/contract (media_db/transitions.py), and every writer
keeps working throughout.

For each kind, in a throwaway copy of the project: the model is edited and `make revision`
writes the expand; it is applied while one raw-SQL writer (n8n's way) uses the old shape and
another the new one, and every row is checked; `make verify` and `make status` see the
transition as contracting; the expand goes down with no consent and nothing lost, and up
again; then the marker is removed, `make revision` writes the contract, which is applied,
verified, taken down (everything back, backfilled) and up again. A volatile default has no
contract, and its way down asks for consent: the values the server generated exist nowhere
else. Revisions are used as written.
"""

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool, text
from sqlalchemy.exc import IntegrityError

from media_db.deploy import catalog
from media_db.pool import conninfo
from tests import model_edits
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for
from tests.helpers import NEXT_REVISION, edit, environment, project_copy, run

CONTRACT_REVISION = f"{int(NEXT_REVISION) + 1:04d}"
RENAMED = (
    "    probe_file: Mapped[str | None] = mapped_column(\n"
    '        Text, info={"renamed_from": "probe_path"}\n'
    "    )\n"
)
SEEDED = 15_000  # three committed batches of 5,000, and a last empty one
Statements = Callable[[int], list[tuple[str, dict[str, Any]]]]


class Writer(threading.Thread):
    """A raw-SQL writer of one shape: one autocommit statement at a time, until stopped. What
    the schema does not take yet (the new shape before its expand) is tried again."""

    def __init__(self, url: URL, statements: Statements) -> None:
        super().__init__(daemon=True)
        self.url, self.statements = url, statements
        self.written = 0  # rounds of statements that went through
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(conninfo(self.url), autocommit=True) as connection:
            round_ = 0
            while not self.halt.is_set():
                try:
                    for sql, parameters in self.statements(round_):
                        connection.execute(sql, parameters)
                    self.written += 1
                    round_ += 1
                except psycopg.errors.UndefinedColumn as error:
                    if self.written:  # the shape went away under a writer: a failure
                        self.errors.append(str(error))
                    self.halt.wait(0.05)  # not there yet: the expand has not committed
                except psycopg.Error as error:
                    self.errors.append(str(error))
                    return


@contextmanager
def writing(url: URL, *shapes: Statements) -> Iterator[list[Writer]]:
    """Writers of each shape running for the block; at its end each has written at least 20
    more rounds than it had when the block's body finished, then they stop."""
    writers = [Writer(url, shape) for shape in shapes]
    for writer in writers:
        writer.start()
    wait_for(lambda: writers[0].written > 0 or bool(writers[0].errors))
    yield writers
    marks = [writer.written for writer in writers]
    wait_for(
        lambda: all(w.written >= m + 20 or w.errors for w, m in zip(writers, marks, strict=True))
    )
    for writer in writers:
        writer.halt.set()
        writer.join(60)
    assert [w.errors for w in writers] == [[] for _ in writers]


def wait_for(condition: Callable[[], bool], seconds: float = 120) -> None:
    done = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        done.wait(0.05)
    raise AssertionError(f"not reached in {seconds} s: {condition}")


def found_through_its_index(url: URL, guard: str) -> None:
    """The guard that refused read its index, built CONCURRENTLY before the drop's lock, and so
    did not scan the table under that lock (the statistics reach other sessions soon after)."""
    scans = "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE indexrelname = "
    wait_for(lambda: scalar(url, f"{scans} '{guard}'") > 0)


def scalar(url: URL, sql: str) -> Any:
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        return connection.execute(text(sql)).scalar()


def execute(url: URL, sql: str) -> None:
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.execute(text(sql))


def ok(args: list[str], env: dict[str, str], project: Path) -> str:
    done = run(args, env, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def refused(project: Path, url: URL, where: str, *named: str) -> str:
    """`make revision`, which must refuse the change at `where` in one line naming each of
    `named`, with no traceback, and write nothing: that line."""
    versions = sorted((project / "alembic" / "versions").glob("*.py"))
    made = run(["make", "revision", "M=refused"], environment(url), cwd=project)
    said = made.stdout + made.stderr
    assert made.returncode != 0, said
    assert "Traceback" not in said, said
    [refusal] = [line for line in said.splitlines() if where in line]
    for name in named:
        assert name in refusal, refusal
    assert sorted((project / "alembic" / "versions").glob("*.py")) == versions
    return refusal


def migrate(project: Path, url: URL, step: str, target: str, *x: str) -> None:
    """An alembic step, run in process on the copy's revisions: these tests check what the
    revisions do, not the command line (tests/deploy does; a refusal's text is read from a
    real `alembic` run here too)."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        getattr(command, step)(config_for(project, connection, *x), target)


def probe_project(
    tmp_path: Path, head_copy: FreshDatabase, source: str, *ddl: str
) -> tuple[Path, URL, dict[str, str], Path]:
    """A project copy and a database at head, with a column of the test's own on MediaItem
    (`source` in the model, `ddl` run): the project, the URL, its environment, the models."""
    project, url = project_copy(tmp_path), head_copy()
    models = project / "models" / "media.py"
    model_edits.existing_column(models, url, "MediaItem", source, "".join(ddl))
    return project, url, environment(url), models


def both_names_must_agree(url: URL, old: str, new: str, same: str, given: tuple[str, str]) -> None:
    """With a rename of media_items' `old` to `new` in flight: a raw INSERT giving both names
    `same` (an SQL literal) is written; one, and an UPDATE of that row, giving them the values
    `given`, which disagree (and differ from `same`), are refused, naming both: nothing is
    dropped silently."""
    execute(
        url,
        f"INSERT INTO media_items (source_url, source_type, {old}, {new}) "
        f"VALUES ('both', 'agreeing', {same}, {same})",
    )
    assert scalar(url, f"SELECT {new} = {same} FROM media_items WHERE source_type = 'agreeing'")
    for sql in (
        f"INSERT INTO media_items (source_url, source_type, {old}, {new}) "
        f"VALUES ('both', 'both', {given[0]}, {given[1]})",
        f"UPDATE media_items SET {old} = {given[0]}, {new} = {given[1]} "
        "WHERE source_type = 'agreeing'",
    ):
        with (
            psycopg.connect(conninfo(url), autocommit=True) as connection,
            pytest.raises(psycopg.errors.IntegrityConstraintViolation) as refused,
        ):
            connection.execute(sql)
        assert f"gave both {old} and {new}, with different values" in str(refused.value)


def catalog_is(url: URL, expected: catalog.Catalog) -> None:
    """Our tables' catalog is `expected` (a snapshot taken earlier), object by object."""
    assert catalog.differences(expected, snapshot(url), set(expected)) == []


def down_to(project: Path, url: URL, expected: catalog.Catalog) -> None:
    """One revision down, which must leave the catalog it came from."""
    migrate(project, url, "downgrade", "-1")
    catalog_is(url, expected)


def revision_text(project: Path, revision: str) -> str:
    """The revision's source, each SQL text ruff or the renderer cut in pieces joined again."""
    [path] = (project / "alembic" / "versions").glob(f"*_{revision}_*.py")
    return re.sub(r'"\s+"', "", path.read_text())


def status(env: dict[str, str], project: Path, *options: str) -> str:
    done = run(["python", "-m", "media_db.deploy.status", *options], env, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def transitions(env: dict[str, str], project: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(status(env, project, "--json"))["transitions"]
    return found


def seed_ids(url: URL) -> list[str]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        rows = connection.execute(text("SELECT id::text FROM media_items ORDER BY id LIMIT 50"))
        return [row[0] for row in rows]


def test_rename_expands_then_contracts(tmp_path: Path, head_copy: FreshDatabase) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_probe_path(models, url)
    before = snapshot(url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_path) SELECT 'seed-' || g, "
        f"'seed', CASE WHEN g % 10 = 0 THEN NULL ELSE '/seed/' || g END "
        f"FROM generate_series(1, {SEEDED}) g",
    )
    ids = seed_ids(url)
    # NULLs that stay NULL (the writers update the rows of `ids`): the backfill leaves them.
    untouched_nulls = scalar(
        url,
        "SELECT count(*) FROM media_items WHERE probe_path IS NULL "
        f"AND id::text NOT IN ({', '.join(repr(id_) for id_ in ids)})",
    )
    edit(models, (model_edits.PROBE_PATH_LINE, RENAMED))

    ok(["make", "revision", "M=rename probe_path"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert "CREATE TRIGGER media_items_probe_file_sync BEFORE INSERT OR UPDATE" in expand
    assert "backfills = {" in expand
    assert "autocommit_block():" in expand
    assert "LIMIT 5000" in expand

    def old_shape(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_path) "
                "VALUES (%(u)s, 'old', %(p)s)",
                {"u": f"old-{n}", "p": f"/old/{n}"},
            ),
            (
                "UPDATE media_items SET probe_path = %(p)s WHERE id = %(id)s",
                {"p": f"/old-update/{n}", "id": ids[n % 25]},
            ),
        ]

    def new_shape(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_file) "
                "VALUES (%(u)s, 'new', %(p)s)",
                {"u": f"new-{n}", "p": f"/new/{n}"},
            ),
            (
                "UPDATE media_items SET probe_file = %(p)s WHERE id = %(id)s",
                {"p": f"/new-update/{n}", "id": ids[25 + n % 25]},
            ),
        ]

    with writing(url, old_shape, new_shape) as (old_writer, new_writer):
        migrate(project, url, "upgrade", "head")
    assert (
        scalar(url, "SELECT count(*) FROM media_items WHERE probe_file IS DISTINCT FROM probe_path")
        == 0
    )
    # Each writer's rows hold what it wrote, under both names.
    for shape, writer in (("old", old_writer), ("new", new_writer)):
        held = scalar(
            url,
            f"SELECT count(*) FROM media_items WHERE source_type = '{shape}' "
            f"AND probe_file = '/{shape}/' || substr(source_url, {len(shape) + 2})",
        )
        assert held == writer.written > 0
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_file IS NULL") == (
        untouched_nulls
    )

    verified = ok(["make", "verify"], env, project)
    assert "in flight, not drift): rename media_items.probe_path -> probe_file" in verified
    [moving] = transitions(env, project)
    assert moving | {"since": None} == {
        "kind": "rename",
        "table": "media_items",
        "old": "probe_path",
        "new": "probe_file",
        "source": "probe_path",
        "since_revision": NEXT_REVISION,
        "since": None,
        "rows_left": 0,
        "stalled": False,
    }
    assert moving["since"] is not None
    shown = f"rename media_items: probe_path -> probe_file, since {NEXT_REVISION} ("
    assert shown in status(env, project)
    both_names_must_agree(url, "probe_path", "probe_file", "'/a'", ("'/b'", "'/c'"))

    # The way down asks no consent and loses nothing: probe_path holds the new name's writes.
    migrate(project, url, "downgrade", "-1")
    assert catalog.differences(before, snapshot(url), set(before)) == []
    assert (
        scalar(
            url,
            "SELECT count(*) FROM media_items WHERE source_type = 'new' "
            "AND probe_path LIKE '/new/%'",
        )
        == new_writer.written
    )
    assert (
        scalar(url, "SELECT count(*) FROM media_items WHERE probe_path LIKE '/new-update/%'") == 25
    )
    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)
    assert (
        scalar(url, "SELECT count(*) FROM media_items WHERE probe_file IS DISTINCT FROM probe_path")
        == 0
    )

    # A writer that bypassed the trigger: the contract's guard refuses to lose its value.
    execute(
        url,
        "ALTER TABLE media_items DISABLE TRIGGER media_items_probe_file_sync; "
        f"UPDATE media_items SET probe_path = '/bypass' WHERE id = '{ids[0]}'; "
        "ALTER TABLE media_items ENABLE TRIGGER media_items_probe_file_sync",
    )
    edit(models, (RENAMED, "    probe_file: Mapped[str | None] = mapped_column(Text)\n"))
    ok(["make", "revision", "M=contract the rename"], env, project)
    contract = revision_text(project, CONTRACT_REVISION)
    assert "DROP COLUMN probe_path" in contract
    # Declared as lossless: no consent asked, the guard proves nothing is lost.
    assert re.search(r'upgrade_lossless_drops_columns = \(\s*"media_items.probe_path",', contract)
    assert "upgrade_drops_columns" not in contract
    refused = run(["alembic", "upgrade", "head"], env, cwd=project)
    assert refused.returncode != 0
    assert "Refusing to drop media_items.probe_path" in refused.stdout + refused.stderr
    assert "probe_path" in snapshot(url)["media_items"].columns
    found_through_its_index(url, "media_items_probe_path_guard")
    execute(
        url,
        "UPDATE media_items SET probe_file = probe_path "
        "WHERE probe_file IS DISTINCT FROM probe_path",
    )

    migrate(project, url, "upgrade", "head")
    contracted = snapshot(url)["media_items"]
    assert "probe_path" not in contracted.columns
    assert "media_items_probe_file_sync" not in contracted.triggers
    assert "Contracting" not in ok(["make", "verify"], env, project)
    assert transitions(env, project) == []

    # Down: probe_path back, kept in step again and backfilled, while the new shape writes.
    with writing(url, new_shape):
        migrate(project, url, "downgrade", "-1")
    assert catalog.differences(expanded, snapshot(url), set(expanded)) == []
    assert (
        scalar(url, "SELECT count(*) FROM media_items WHERE probe_file IS DISTINCT FROM probe_path")
        == 0
    )
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_path = '/bypass'") == 1
    migrate(project, url, "upgrade", "head")


AREA = 'area: Mapped[int] = mapped_column(info={"backfill": "coalesce(width * height, 0)"})'
WRONG_AREA = (
    "SELECT count(*) FROM media_items WHERE area IS DISTINCT FROM coalesce(width * height, 0)"
)


def test_not_null_column_with_a_backfill_expands_then_contracts(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, width, height) SELECT 's' || g, "
        "'seed', CASE WHEN g % 7 = 0 THEN NULL ELSE g % 100 + 1 END, 2 "
        f"FROM generate_series(1, {SEEDED}) g",
    )
    model_edits.add_column(models, "MediaItem", AREA)

    ok(["make", "revision", "M=area"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert "CREATE TRIGGER media_items_area_sync BEFORE INSERT OR UPDATE" in expand
    assert "VALIDATE CONSTRAINT media_items_area_not_null_check" in expand

    def old_shape(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, width, height) "
                "VALUES ('o', 'old', %(w)s, 3)",
                {"w": n % 50 + 1},
            )
        ]

    def new_shape(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, width, height, area) "
                "VALUES ('n', 'new', %(w)s, 5, %(a)s)",
                {"w": n % 50 + 1, "a": (n % 50 + 1) * 5},
            )
        ]

    with writing(url, old_shape, new_shape) as (old_writer, new_writer):
        migrate(project, url, "upgrade", "head")
    assert scalar(url, WRONG_AREA) == 0
    assert (
        scalar(url, "SELECT count(*) FROM media_items WHERE source_type = 'old'")
        == old_writer.written
    )
    assert (
        scalar(url, "SELECT count(*) FROM media_items WHERE source_type = 'new'")
        == new_writer.written
        > 0
    )
    assert snapshot(url)["media_items"].columns["area"].not_null

    verified = ok(["make", "verify"], env, project)
    assert "backfill media_items.area from (coalesce(width * height, 0))" in verified
    [moving] = transitions(env, project)
    assert (moving["kind"], moving["new"], moving["rows_left"]) == ("backfill", "area", 0)

    migrate(project, url, "downgrade", "-1")  # no consent: every area is derivable
    assert catalog.differences(before, snapshot(url), set(before)) == []
    # The deploy sets the pace of a written backfill as of 0003's: each batch its own commit.
    migrate(project, url, "upgrade", "head", "backfill-batch=4000")
    rows = scalar(url, "SELECT count(*) FROM media_items")
    batches = scalar(url, "SELECT count(DISTINCT xmin::text) FROM media_items")
    assert batches == -(-rows // 4000)
    expanded = snapshot(url)

    edit(models, (AREA, "area: Mapped[int]"))
    ok(["make", "revision", "M=contract area"], env, project)
    assert "DROP TRIGGER IF EXISTS media_items_area_sync" in revision_text(
        project, CONTRACT_REVISION
    )
    migrate(project, url, "upgrade", "head")
    assert "Contracting" not in ok(["make", "verify"], env, project)
    # Contracted: a writer of the old shape must now give the column.
    old_insert = "INSERT INTO media_items (source_url, source_type) VALUES ('late', 'old')"
    with pytest.raises(IntegrityError, match="area"):
        execute(url, old_insert)

    migrate(project, url, "downgrade", "-1")
    assert catalog.differences(expanded, snapshot(url), set(expanded)) == []
    execute(url, old_insert)
    assert scalar(url, WRONG_AREA) == 0
    migrate(project, url, "upgrade", "head")


TOKEN = 'token: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))'


def test_volatile_default_expands_with_no_rewrite(tmp_path: Path, head_copy: FreshDatabase) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type) SELECT 's' || g, 'seed' "
        f"FROM generate_series(1, {SEEDED}) g",
    )
    relfilenode = scalar(url, "SELECT relfilenode FROM pg_class WHERE relname = 'media_items'")
    model_edits.add_column(models, "MediaItem", TOKEN)

    ok(["make", "revision", "M=token"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert "SET DEFAULT gen_random_uuid()" in expand
    assert "_sync" not in expand  # new rows get the default: no trigger needed

    def old_shape(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [("INSERT INTO media_items (source_url, source_type) VALUES ('o', 'old')", {})]

    def new_shape(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, token) "
                "VALUES ('n', 'new', gen_random_uuid())",
                {},
            )
        ]

    with writing(url, old_shape, new_shape):
        migrate(project, url, "upgrade", "head")
    assert scalar(url, "SELECT count(*) FROM media_items WHERE token IS NULL") == 0
    assert scalar(url, "SELECT count(DISTINCT token) = count(*) FROM media_items")
    assert snapshot(url)["media_items"].columns["token"].not_null
    # No rewrite: the table keeps its file.
    assert (
        scalar(url, "SELECT relfilenode FROM pg_class WHERE relname = 'media_items'") == relfilenode
    )
    ok(["make", "verify"], env, project)

    # The generated values exist nowhere else: going down asks for consent, changing nothing.
    refused = run(["alembic", "downgrade", "-1"], env, cwd=project)
    assert refused.returncode != 0
    assert "media_items.token" in refused.stdout + refused.stderr
    assert "token" in snapshot(url)["media_items"].columns
    consented = environment(url, ALLOW_DATA_LOSS="1", MIGRATION_BACKUP="skip")
    ok(["alembic", "downgrade", "-1"], consented, project)
    assert catalog.differences(before, snapshot(url), set(before)) == []
    migrate(project, url, "upgrade", "head")
    assert scalar(url, "SELECT count(*) FROM media_items WHERE token IS NULL") == 0


# A column of the test's own, in place first: a user's index on one of ours (say mime_type)
# would rightly make `make revision` refuse to retype it.
PROBE_TYPE = "probe_type: Mapped[str | None] = mapped_column(String(100))"
NARROWED = (
    "probe_type: Mapped[str | None] = "
    'mapped_column(String(50), info={"using": "left(probe_type, 50)", "down": "probe_type"})'
)
LONG = "video/" + "x" * 74  # fits VARCHAR(100), not VARCHAR(50)
OUT_OF_STEP = (
    "SELECT count(*) FROM media_items WHERE probe_type IS DISTINCT FROM left(probe_type__old, 50)"
)


def test_type_change_expands_with_a_cutover_then_contracts(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        PROBE_TYPE,
        "ALTER TABLE media_items ADD COLUMN probe_type varchar(100)",
    )
    before = snapshot(url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_type) SELECT 's' || g, 'seed', "
        f"CASE WHEN g % 9 = 0 THEN NULL ELSE 'video/' || g END FROM generate_series(1, {SEEDED}) g",
    )
    execute(url, f"UPDATE media_items SET probe_type = '{LONG}' WHERE source_url = 's1'")
    ids = seed_ids(url)
    relfilenode = scalar(url, "SELECT relfilenode FROM pg_class WHERE relname = 'media_items'")
    edit(models, (PROBE_TYPE, NARROWED))

    ok(["make", "revision", "M=narrow probe_type"], env, project)
    expand = revision_text(project, NEXT_REVISION)
    assert "RENAME COLUMN probe_type TO probe_type__old" in expand
    assert "ALTER COLUMN probe_type TYPE" not in expand  # no rewrite

    def inserts(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, probe_type) "
                "VALUES ('w', 'writer', %(m)s)",
                {"m": f"audio/{n}"},
            )
        ]

    def updates(n: int) -> list[tuple[str, dict[str, Any]]]:
        return [
            (
                "UPDATE media_items SET probe_type = %(m)s WHERE id = %(id)s",
                {"m": f"image/{n}", "id": ids[1 + n % 40]},
            )
        ]

    with writing(url, inserts, updates) as (inserter, _):
        migrate(project, url, "upgrade", "head")
    assert scalar(url, OUT_OF_STEP) == 0
    assert scalar(url, "SELECT count(*) FROM media_items WHERE source_type = 'writer'") == (
        inserter.written
    )
    assert scalar(url, f"SELECT count(*) FROM media_items WHERE probe_type__old = '{LONG}'") == 1
    # A write to another column keeps the original, not the narrowed value.
    execute(url, "UPDATE media_items SET source_type = 'touched' WHERE source_url = 's1'")
    assert scalar(url, f"SELECT count(*) FROM media_items WHERE probe_type__old = '{LONG}'") == 1
    columns = snapshot(url)["media_items"].columns
    assert (columns["probe_type"].type, columns["probe_type__old"].type) == (
        "character varying(50)",
        "character varying(100)",
    )
    # No rewrite: the table keeps its file.
    assert scalar(url, "SELECT relfilenode FROM pg_class WHERE relname = 'media_items'") == (
        relfilenode
    )
    assert "retype media_items.probe_type, the old type kept in probe_type__old" in ok(
        ["make", "verify"], env, project
    )
    [moving] = transitions(env, project)
    assert (moving["kind"], moving["old"], moving["rows_left"]) == ("retype", "probe_type__old", 0)

    migrate(project, url, "downgrade", "-1")  # no consent: the old column holds all
    assert catalog.differences(before, snapshot(url), set(before)) == []
    assert scalar(url, f"SELECT count(*) FROM media_items WHERE probe_type = '{LONG}'") == 1
    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)

    # The long value exists only in the old column: the contract's guard keeps it.
    edit(models, (NARROWED, PROBE_TYPE.replace("100", "50")))
    ok(["make", "revision", "M=contract probe_type"], env, project)
    refused = run(["alembic", "upgrade", "head"], env, cwd=project)
    assert refused.returncode != 0
    assert "Refusing to drop media_items.probe_type__old" in refused.stdout + refused.stderr
    found_through_its_index(url, "media_items_probe_type__old_guard")
    execute(url, "UPDATE media_items SET probe_type = 'video/long' WHERE source_url = 's1'")
    migrate(project, url, "upgrade", "head")
    assert "probe_type__old" not in snapshot(url)["media_items"].columns
    assert "Contracting" not in ok(["make", "verify"], env, project)

    with writing(url, inserts):
        migrate(project, url, "downgrade", "-1")
    assert catalog.differences(expanded, snapshot(url), set(expanded)) == []
    assert scalar(url, OUT_OF_STEP) == 0
    migrate(project, url, "upgrade", "head")


COUNT_AS_TEXT = 'probe_count: Mapped[str | None] = mapped_column(Text, server_default="0")'
COUNT_AS_INTEGER = (
    'probe_count: Mapped[int | None] = mapped_column(server_default=text("0"), '
    'info={"using": "probe_count::integer", "down": "probe_count::text"})'
)


def test_a_type_change_that_changes_its_default_is_written_and_round_trips(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """text DEFAULT '0' to integer DEFAULT 0: Alembic's comparison of the two defaults asks
    the server `'0' = 0`, which it cannot answer; `make revision` writes the expand (the default
    moves with the column) instead of crashing."""
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        COUNT_AS_TEXT,
        "ALTER TABLE media_items ADD COLUMN probe_count text DEFAULT '0'",
    )
    before = snapshot(url)
    execute(url, "INSERT INTO media_items (source_url, source_type) VALUES ('s', 'seed')")
    edit(models, (COUNT_AS_TEXT, COUNT_AS_INTEGER))

    made = ok(["make", "revision", "M=count as integer"], env, project)
    assert "Traceback" not in made
    expand = revision_text(project, NEXT_REVISION)
    assert "ALTER COLUMN probe_count SET DEFAULT 0" in expand
    migrate(project, url, "upgrade", "head")
    assert "No new upgrade operations detected" in ok(["make", "verify"], env, project)
    execute(url, "INSERT INTO media_items (source_url, source_type) VALUES ('n', 'new')")
    assert scalar(url, "SELECT sum(probe_count) FROM media_items") == 0
    migrate(project, url, "downgrade", "-1")
    assert catalog.differences(before, snapshot(url), set(before)) == []
    assert scalar(url, "SELECT string_agg(DISTINCT probe_count, ',') FROM media_items") == "0"


TOTAL = 'probe_total: Mapped[int] = mapped_column(server_default=text("0"))'
TOTAL_WIDENED = (
    'probe_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"), '
    'info={"using": "probe_total::bigint"})'
)
TOTAL_CONTRACTED = 'probe_total: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))'
NOT_NULL_NAMES = """
    SELECT a.attname, con.conname FROM pg_constraint con
    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
    WHERE con.conrelid = 'media_items'::regclass AND con.contype = 'n'
      AND a.attname LIKE 'probe_total%%'
"""


def not_null_names(url: URL) -> dict[str, str]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return {
            str(column): str(name) for column, name in connection.exec_driver_sql(NOT_NULL_NAMES)
        }


def assert_no_drift(verified: str) -> None:
    assert "unexpected" not in verified, verified
    assert "missing" not in verified, verified


def test_a_not_null_type_change_leaves_the_names_a_fresh_database_has(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """integer to bigint on a NOT NULL column: PostgreSQL 18 names NOT NULL constraints, and a
    column rename keeps the name; after the cutover and after the contract each column's
    constraint has the name its own name gives (none on 15), and `make verify` sees no drift."""
    project, url, env, models = probe_project(
        tmp_path,
        head_copy,
        TOTAL,
        "ALTER TABLE media_items ADD COLUMN probe_total integer NOT NULL DEFAULT 0",
    )
    execute(url, "INSERT INTO media_items (source_url, source_type) VALUES ('s', 'seed')")
    before, names_before = snapshot(url), not_null_names(url)
    edit(models, (TOTAL, TOTAL_WIDENED))
    ok(["make", "revision", "M=widen probe_total"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    named = not_null_names(url)
    assert all(name == f"media_items_{column}_not_null" for column, name in named.items()), named

    edit(models, (TOTAL_WIDENED, TOTAL_CONTRACTED))
    ok(["make", "revision", "M=contract probe_total"], env, project)
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    assert not_null_names(url) == names_before  # probe_total's own name, or none before 18

    migrate(project, url, "downgrade", "-2")
    assert catalog.differences(before, snapshot(url), set(before)) == []
    assert not_null_names(url) == names_before
