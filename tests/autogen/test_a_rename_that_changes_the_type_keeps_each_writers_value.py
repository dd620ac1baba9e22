"""A rename that changes the type too is one transition: `mime_type` varchar(100) renamed
`media_type` and narrowed to varchar(50) (`using: left(mime_type, 50)`, `down: media_type`).
Old-shape writers keep their column, its name and its type until the contract, so n8n's
70-character inserts keep working; the data layer (by key) writes the new column; neither the
backfill nor an UPDATE of another column rewrites a kept original from its narrowed value; the
rollback gives back exactly what each writer wrote; the contract's guard refuses while an
original is only in the old column. The same holds for text renamed and made jsonb
(`to_jsonb`, `#>> '{}'`): `timeout` comes back as written, never as `"timeout"`.
"""

from pathlib import Path
from typing import Any

import pytest
from alembic.util import CommandError
from sqlalchemy import URL, create_engine, pool, text

from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    both_names_must_agree,
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
from tests.helpers import NEXT_REVISION, api_works, edit, environment, project_copy

DECLARED = "mime_type: Mapped[str | None] = mapped_column(String(100))"
RENAMED = (
    'mime_type: Mapped[str | None] = mapped_column("media_type", String(50), key="mime_type", '
    'info={"renamed_from": "mime_type", "using": "left(mime_type, 50)", "down": "media_type"})'
)
CONTRACTED = (
    'mime_type: Mapped[str | None] = mapped_column("media_type", String(50), key="mime_type")'
)
SEEDED, LONG_SEEDED = 6_000, 2_000  # two committed batches; a third of them 70 characters
# What each old-shape writer wrote (70 characters: too long for the new type), from its row.
OLD_VALUE = "'video/' || lpad(substr(source_url, 5), 6, '0') || repeat('x', 58)"
NEW_VALUE = "'audio/' || substr(source_url, 5)"
OUT_OF_STEP = (
    "SELECT count(*) FROM media_items WHERE media_type IS DISTINCT FROM left(mime_type, 50)"
)
Statements = list[tuple[str, dict[str, Any]]]
# Through the API: a write and a read by the key (the new column), and a raw writer's row.
API = """
        media = MediaRepository(db)
        item = await media.create(NewMedia("s3://api", "upload", mime_type="video/api"))
        assert (await media.get(item.id)).mime_type == "video/api"
        raw = await media.get(sys.argv[2])
        assert raw is not None and raw.mime_type == sys.argv[3], raw
"""


def long_value(n: int) -> str:
    return f"video/{n:06d}" + "x" * 58


def held(url: URL, shape: str, value: str) -> int:
    """The rows of the writer of `shape` whose mime_type is what it wrote."""
    return int(
        scalar(
            url,
            f"SELECT count(*) FROM media_items WHERE source_type = '{shape}' "
            f"AND mime_type = {value}",
        )
    )


def seeds(url: URL) -> dict[str, str | None]:
    """Each seeded row's mime_type, by id."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        rows = connection.execute(
            text("SELECT id::text, mime_type FROM media_items WHERE source_url ~ '^s[0-9]+$'")
        )
        return {row[0]: row[1] for row in rows}


def test_a_narrowing_rename_keeps_each_writers_value_until_the_contract(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    before = snapshot(url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, mime_type) SELECT 's' || g, 'seed', "
        "CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN 'video/' || g "
        f"ELSE 'video/' || lpad(g::text, 6, '0') || repeat('x', 58) END "
        f"FROM generate_series(1, {SEEDED}) g",
    )
    seeded = seeds(url)
    long_rows = [row for row, value in seeded.items() if value and len(value) == 70][:20]
    edit(models, (DECLARED, RENAMED))
    ok(["make", "revision", "M=media_type"], env, project)
    assert "RENAME COLUMN" not in revision_text(project, NEXT_REVISION)  # no cutover

    def old_shape(n: int) -> Statements:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, mime_type) "
                "VALUES (%(u)s, 'old', %(m)s)",
                {"u": f"old-{n}", "m": long_value(n)},
            ),
            (  # another column of a row holding a long original
                "UPDATE media_items SET source_type = 'touched' WHERE id = %(id)s",
                {"id": long_rows[n % 20]},
            ),
        ]

    def new_shape(n: int) -> Statements:
        return [
            (
                "INSERT INTO media_items (source_url, source_type, media_type) "
                "VALUES (%(u)s, 'new', %(m)s)",
                {"u": f"new-{n}", "m": f"audio/{n}"},
            )
        ]

    with writing(url, old_shape, new_shape) as (old_writer, new_writer):
        migrate(project, url, "upgrade", "head")
    longs = LONG_SEEDED + old_writer.written
    assert scalar(url, "SELECT count(*) FROM media_items WHERE length(mime_type) = 70") == longs
    assert scalar(url, OUT_OF_STEP) == 0
    assert held(url, "new", NEW_VALUE) == new_writer.written > 0
    assert_no_drift(ok(["make", "verify"], env, project))
    # Both names, agreeing through `using`: each keeps what it was given.
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, mime_type, media_type) "
        f"VALUES ('both', 'narrowed', '{long_value(0)}', '{long_value(0)[:50]}')",
    )
    assert held(url, "narrowed", f"'{long_value(0)}'") == 1
    execute(url, "UPDATE media_items SET media_type = NULL WHERE source_type = 'narrowed'")
    assert scalar(url, "SELECT mime_type FROM media_items WHERE source_type = 'narrowed'") is None
    both_names_must_agree(
        url, "mime_type", "media_type", "'video/same'", (f"'{long_value(1)}'", "'video/other'")
    )
    narrowed = scalar(
        url, f"SELECT left(mime_type, 50) FROM media_items WHERE id = '{long_rows[0]}'"
    )
    api_works(project, url, API, long_rows[0], narrowed)
    # The API wrote the new column; old readers see it by the old name.
    assert scalar(url, "SELECT mime_type FROM media_items WHERE source_url = 's3://api'") == (
        "video/api"
    )

    down_to(project, url, before)  # nothing lost: each writer's value, as it wrote it
    assert held(url, "old", OLD_VALUE) == old_writer.written
    assert held(url, "new", NEW_VALUE) == new_writer.written
    assert scalar(url, "SELECT count(*) FROM media_items WHERE length(mime_type) = 70") == longs
    assert seeds(url) == seeded
    migrate(project, url, "upgrade", "head")
    expanded = snapshot(url)

    edit(models, (RENAMED, CONTRACTED))
    ok(["make", "revision", "M=contract media_type"], env, project)
    with pytest.raises(CommandError, match=r"Refusing to drop media_items\.mime_type"):
        migrate(project, url, "upgrade", "head")  # the long originals are only in mime_type
    execute(url, "UPDATE media_items SET mime_type = media_type WHERE length(mime_type) > 50")
    migrate(project, url, "upgrade", "head")
    assert_no_drift(ok(["make", "verify"], env, project))
    api_works(project, url, API, long_rows[0], narrowed)
    down_to(project, url, expanded)


NOTE = "probe_note: Mapped[str | None] = mapped_column(Text)"
AS_JSON = (
    "probe_detail: Mapped[dict[str, Any] | None] = mapped_column(info={"
    '"renamed_from": "probe_note", "using": "to_jsonb(probe_note)", '
    '"down": "probe_detail #>> \'{}\'"})'
)
NOTES = "SELECT string_agg(probe_note, ',' ORDER BY probe_note) FROM media_items"


def test_a_rename_to_jsonb_keeps_each_writers_text(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """text renamed and made jsonb: an old-shape writer's text keeps working and stays as
    written, a new-shape writer's JSON string comes back as its text, never quoted."""
    project, url, env, models = probe_project(
        tmp_path, head_copy, NOTE, "ALTER TABLE media_items ADD COLUMN probe_note text"
    )
    before = snapshot(url)
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_note) VALUES ('s', 's', 'seed')",
    )
    edit(models, (NOTE, AS_JSON))
    ok(["make", "revision", "M=probe_detail"], env, project)
    migrate(project, url, "upgrade", "head")
    execute(
        url,
        "INSERT INTO media_items (source_url, source_type, probe_note) "
        "VALUES ('o', 'o', 'timeout'); "
        "INSERT INTO media_items (source_url, source_type, probe_detail) "
        "VALUES ('n', 'n', to_jsonb('late'::text)); "
        "UPDATE media_items SET source_type = 'touched' WHERE probe_note = 'timeout'",
    )
    assert scalar(url, "SELECT count(*) FROM media_items WHERE probe_detail = '\"timeout\"'") == 1
    assert scalar(url, NOTES) == "late,seed,timeout"
    down_to(project, url, before)
    assert scalar(url, NOTES) == "late,seed,timeout"
