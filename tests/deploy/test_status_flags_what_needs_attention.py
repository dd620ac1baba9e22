"""`make status` exits 0 on a healthy database, quickly, and non-zero naming each thing that needs
attention: pending revisions (with their Locks), a revision file changed since it was applied,
drift, an INVALID index, a session whose transaction would block DDL, dead tuples; it names the
migration lock's holder and the server's major, in text and JSON."""

import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import URL, Engine, create_engine, pool, text
from sqlalchemy.exc import IntegrityError

from media_db.deploy import lock, project
from tests.conftest import FreshDatabase
from tests.faults import scalar, wait_until
from tests.helpers import (
    HEAD,
    NEXT_REVISION,
    alembic_config,
    edit,
    environment,
    project_copy,
    run,
)

STATUS = ["python", "-m", "media_db.deploy.status"]
DEAD_TUPLES = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'processing_jobs'"
# A user's hand-written revision: what it adds, existing rows may break.
DEMANDING_REVISION = f'''"""Width limit, one row per URL, a MIME type always.

Why: a test revision. Locks: catalog only.
"""

from alembic import op

revision = "{NEXT_REVISION}"
down_revision = "{HEAD}"


def upgrade() -> None:
    op.create_check_constraint("max_width", "media_items", "width <= 1000")
    op.create_check_constraint("min_height", "media_items", "height >= 1")  # no row breaks it
    op.create_unique_constraint("one_per_url", "media_items", ["source_url"])
    op.alter_column("media_items", "mime_type", nullable=False)


def downgrade() -> None:
    op.alter_column("media_items", "mime_type", nullable=True)
    op.drop_constraint("one_per_url", "media_items")
    op.drop_constraint("min_height", "media_items")
    op.drop_constraint("max_width", "media_items")
'''
MEDIA_ROWS = """
    INSERT INTO media_items (source_url, source_type, width, height, mime_type) VALUES
    ('a', 't', 4000, 10, NULL), ('a', 't', 500, 10, 'video/mp4'), ('b', 't', 2000, 10, NULL)
"""


def status(url: URL, *args: str, cwd: Path | None = None) -> tuple[int, dict[str, Any]]:
    kwargs = {"cwd": cwd} if cwd is not None else {}
    done = run([*STATUS, "--json", *args], environment(url), **kwargs)  # type: ignore[arg-type]
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_healthy_database_is_all_clear(migrated: URL) -> None:
    # How quick it is is measured and printed by the command itself (`seconds`), not asserted.
    done = run(STATUS, environment(migrated))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All clear" in done.stdout
    assert "PostgreSQL " in done.stdout
    _, found = status(migrated)
    assert found["current"] == found["head"] == [HEAD]
    assert found["drift"] == []
    assert found["seconds"] >= 0


def test_behind_head_lists_pending_revisions_with_their_locks(
    fresh_database: FreshDatabase,
) -> None:
    url = fresh_database()
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "0006")
    code, found = status(url)
    assert code == 1
    assert found["pending"][0]["revision"] == "0007"
    assert "SHARE UPDATE EXCLUSIVE" in found["pending"][0]["locks"]
    assert found["drift"] is None
    text_form = run(STATUS, environment(url))
    assert "run `make upgrade`" in text_form.stdout
    pending = int(HEAD) - 6
    assert text_form.stdout.splitlines()[-1].startswith(
        f"Needs attention: {pending} revisions pending"
    )


def test_a_revision_edited_after_it_was_applied_is_flagged(tmp_path: Path, migrated: URL) -> None:
    project = project_copy(tmp_path)
    [landed] = (project / "alembic" / "versions").glob("*_0007_*.py")
    edit(landed, ("ON processing_jobs (media_item_id)", "ON processing_jobs (media_item_id, id)"))
    code, found = status(migrated, cwd=project)
    assert code == 1
    assert found["changed_since_applied"] == ["0007"]

    edit(landed, ("ON processing_jobs (media_item_id, id)", "ON processing_jobs (media_item_id)"))
    edit(landed, ("Why: the worker's claim", "Why: the workers' claim"))  # prose, not code
    code, found = status(migrated, cwd=project)
    assert code == 0
    assert found["changed_since_applied"] == []


def test_drift_invalid_index_blockers_lock_holder_and_dead_tuples_are_reported(
    migrated: URL,
) -> None:
    engine: Engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("ALTER TABLE processing_jobs ALTER COLUMN priority SET DEFAULT 1"))
        # Else autovacuum (eager on this table, per the models) may clear the dead tuples this
        # test counts before `make status` reads them; a slow machine gives it the time.
        connection.execute(text("ALTER TABLE processing_jobs SET (autovacuum_enabled = off)"))
        connection.execute(
            text("INSERT INTO media_items (source_url, source_type) VALUES ('a', 't'), ('b', 't')")
        )
        connection.execute(
            text(
                "INSERT INTO processing_jobs (workflow_type) "
                "SELECT 'w' FROM generate_series(1, 10001)"
            )
        )
        connection.execute(text("DELETE FROM processing_jobs"))
        connection.commit()
    # A failed concurrent build leaves an INVALID index behind.
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
        pytest.raises(IntegrityError),
    ):
        connection.execute(
            text("CREATE UNIQUE INDEX CONCURRENTLY one_per_type ON media_items (source_type)")
        )
    with engine.connect() as watcher:  # the statistics reach the views after the backend ends
        wait_until(
            lambda: scalar(watcher, DEAD_TUPLES) >= 10_001,  # type: ignore[operator]
            "the dead tuples are counted",
        )
    with engine.connect() as holder, engine.connect() as blocker:
        key = lock.advisory_key(project.VERSION_TABLE)
        holder_pid = holder.scalar(text("SELECT pg_backend_pid()"))
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        blocker_pid = blocker.scalar(text("SELECT pg_backend_pid()"))
        blocker.execute(text("SELECT count(*) FROM media_items"))  # open, holding ACCESS SHARE
        code, found = status(migrated, "--blocking-after", "0")
        blocker.rollback()
    assert code == 1
    assert (
        "processing_jobs column priority: expected integer NOT NULL DEFAULT 5, "
        "found integer NOT NULL DEFAULT 1"
    ) in found["drift"]
    assert found["invalid_indexes"] == ["one_per_type on media_items"]
    assert found["migration_lock_holder"].startswith(f"pid {holder_pid} ")
    [session] = found["blocking_sessions"]
    assert session["pid"] == blocker_pid
    assert "count(*) FROM media_items" in session["query"]
    assert found["processing_jobs"]["dead_tuples"] >= 10_001
    assert found["server_major"] >= 13
    attention = " | ".join(found["attention"])
    for expected in ("from the models", "INVALID", "would block DDL", "dead tuples"):
        assert expected in attention


def test_rows_that_break_what_a_pending_revision_adds_are_counted(
    tmp_path: Path, migrated: URL
) -> None:
    copy = project_copy(tmp_path)
    (copy / "alembic" / "versions" / f"{NEXT_REVISION}_demands.py").write_text(DEMANDING_REVISION)
    engine = create_engine(migrated, poolclass=pool.NullPool)
    with engine.begin() as connection:
        connection.execute(text(MEDIA_ROWS))
    code, found = status(migrated, cwd=copy)
    assert code == 1
    counted = {
        (v["revision"], v["what"].split(" (")[0], v["rows"]) for v in found["pending_violations"]
    }
    assert counted == {
        (NEXT_REVISION, "CHECK media_items_max_width_check", 2),
        (NEXT_REVISION, "UNIQUE one_per_url", 2),
        (NEXT_REVISION, "mime_type NOT NULL", 2),
    }, found["pending_violations"]
    shown = " ".join(run(STATUS, environment(migrated), cwd=copy).stdout.split())
    assert (
        f"! pending {NEXT_REVISION} adds CHECK media_items_max_width_check (width <= 1000) on "
        "media_items: 2 rows break it now: fix them before `make upgrade`, or it fails there"
    ) in shown, shown
    with engine.connect() as connection:  # read only: nothing applied, no row touched
        assert project.current_heads(connection) == (HEAD,)
        assert connection.scalar(text("SELECT count(*) FROM media_items")) == 3

    with engine.begin() as connection:
        connection.execute(text("UPDATE media_items SET width = 100, mime_type = 'video/mp4'"))
        connection.execute(text("UPDATE media_items SET source_url = id::text"))
    code, found = status(migrated, cwd=copy)
    assert found["pending_violations"] == []
    assert code == 1  # still pending, nothing else


def test_rows_a_pending_backfill_fixes_are_not_counted(fresh_database: FreshDatabase) -> None:
    url = fresh_database()
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "0007")
        # 0008 makes priority NOT NULL, having set NULLs to 5 in batches first.
        connection.execute(
            text("INSERT INTO processing_jobs (workflow_type, priority) VALUES ('w', NULL)")
        )
        connection.commit()
    code, found = status(url)
    assert code == 1
    assert found["pending"][0]["revision"] == "0008"
    assert found["pending_violations"] == []
