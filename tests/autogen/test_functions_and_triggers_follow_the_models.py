"""Functions and triggers are declared once, in models/triggers.py: a change there makes
`make revision` write alembic_utils' operation for it, with a Locks: line that tells the truth,
and the revision upgrades, verifies, passes `make lint-sql` and downgrades back to exactly the
previous definitions, unedited.

Each test works in a throwaway copy of the project; the next revision id is computed from the
head. The lock claims are proven with a second session holding a lock on the table: a step
that needs a conflicting lock gives up after lock_timeout, one that needs none goes through.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import URL, Connection, create_engine, pool, text

from media_db.deploy import catalog
from media_db.deploy.project import VERSION_TABLE
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot, written
from tests.conftest import FreshDatabase
from tests.helpers import HEAD, NEXT_REVISION, edit, environment, project_copy, run

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

NOW_BODY = "        NEW.updated_at := now();\n"
# Appended to models/triggers.py, whatever its text: the new entities join the declared ones.
DECLARED = "\nENTITIES += [ROW_NOTIFY, ROW_NOTIFY_TRIGGER]\n"
# A new function and a trigger on an existing table (named apart from the queue's own wakeup).
NOTIFY = '''ROW_NOTIFY = PGFunction(
    schema=SCHEMA,
    signature="processing_jobs_row_notify()",
    definition="""RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('processing_jobs', NEW.id::text);
        RETURN NEW;
    END
    $$""",
)
ROW_NOTIFY_TRIGGER = PGTrigger(
    schema=SCHEMA,
    signature="processing_jobs_row_notify",
    on_entity=f"{SCHEMA}.processing_jobs",
    definition=f"AFTER INSERT ON {SCHEMA}.processing_jobs "
    "FOR EACH ROW EXECUTE FUNCTION processing_jobs_row_notify()",
)
'''
QUICK_GIVE_UP = ["-x", "lock_timeout=300ms", "-x", "lock-retries=0"]


def bodies(url: URL) -> dict[str, str]:
    """Our schema's function bodies exactly as stored (prosrc), by name."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        rows = connection.execute(
            text("SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace")
        )
        return {name: body for name, body in rows}


def version(url: URL) -> str:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return str(connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")))


@contextmanager
def holding(url: URL, lock: str, table: str) -> Iterator[Connection]:
    """Another session holding `lock` on `table` in an open transaction (a reader: ACCESS
    SHARE; a writer mid-transaction: ROW EXCLUSIVE)."""
    with create_engine(url, poolclass=pool.NullPool).connect() as blocker:
        blocker.execute(text(f"LOCK TABLE {table} IN {lock} MODE"))
        yield blocker
        blocker.rollback()


def calls(body: str) -> list[str]:
    return re.findall(r"\bop\.(\w+)\(", body)


def revise(project: Path, url: URL, message: str) -> tuple[str, str, str]:
    """`make revision`; the revision's docstring, upgrade() and downgrade()."""
    made = run(["make", "revision", f"M={message}"], environment(url), cwd=project)
    assert made.returncode == 0, made.stdout + made.stderr
    docstring, body = written(project).split('"""', 2)[1:]
    upgrade, downgrade = body.split("def downgrade() -> None:")
    return " ".join(docstring.split()), upgrade, downgrade


def succeeds(args: list[str], url: URL, project: Path) -> None:
    done = run(args, environment(url), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr


def gives_up(args: list[str], url: URL, project: Path) -> None:
    done = run(args, environment(url), cwd=project)
    assert done.returncode != 0
    assert "lock_timeout each time" in done.stdout + done.stderr


def test_changed_function_is_one_replace_entity_taking_no_table_lock(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    before, before_bodies = snapshot(url), bodies(url)
    edit(
        project / "models" / "triggers.py",
        (NOW_BODY, NOW_BODY.replace("now()", "clock_timestamp()")),
    )

    docstring, upgrade, downgrade = revise(project, url, "updated_at from clock_timestamp")
    assert calls(upgrade) == ["replace_entity"]
    assert calls(downgrade) == ["replace_entity"]
    assert "clock_timestamp()" in upgrade
    assert "now()" in downgrade
    assert "clock_timestamp()" not in downgrade
    assert "replace_entity function media_items_touch_updated_at(): no table lock" in docstring, (
        docstring
    )
    succeeds(["make", "lint-sql"], url, project)

    # No table lock: it goes through while another session holds media_items exclusively.
    with holding(url, "ACCESS EXCLUSIVE", "media_items"):
        succeeds(["alembic", *QUICK_GIVE_UP, "upgrade", "head"], url, project)
    assert "clock_timestamp()" in bodies(url)["media_items_touch_updated_at"]
    succeeds(["make", "verify"], url, project)

    succeeds(["alembic", "downgrade", "-1"], url, project)
    assert bodies(url) == before_bodies, "the previous body, character for character"
    assert catalog.differences(before, snapshot(url), set(before)) == []


def test_new_function_and_trigger_lock_as_their_lines_say(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url = project_copy(tmp_path), head_copy()
    before, before_bodies = snapshot(url), bodies(url)
    triggers = project / "models" / "triggers.py"
    triggers.write_text(triggers.read_text() + "\n\n" + NOTIFY + DECLARED)

    docstring, upgrade, downgrade = revise(project, url, "notify on new jobs")
    assert calls(upgrade) == ["create_entity", "create_entity"]
    assert calls(downgrade) == ["drop_entity", "drop_entity"]
    for line in (
        "create_entity function processing_jobs_row_notify(): no table lock",
        "create_entity trigger processing_jobs_row_notify on processing_jobs: SHARE ROW EXCLUSIVE "
        "on processing_jobs, briefly (a catalog update, no scan), waiting at most the session's "
        "lock_timeout: writes wait, reads continue",
        "drop_entity trigger processing_jobs_row_notify on processing_jobs: ACCESS EXCLUSIVE on "
        "processing_jobs, briefly",
        "drop_entity function processing_jobs_row_notify(): no table lock",
    ):
        assert line in docstring, docstring
    assert '"ban-drop-function": ' in written(project), (
        "lint_waivers: the downgrade drops a function"
    )
    succeeds(["make", "lint-sql"], url, project)

    # SHARE ROW EXCLUSIVE: a writer mid-transaction makes it give up, a reader does not.
    with holding(url, "ROW EXCLUSIVE", "processing_jobs"):
        gives_up(["alembic", *QUICK_GIVE_UP, "upgrade", "head"], url, project)
    assert version(url) == HEAD
    assert bodies(url) == before_bodies, "the function is rolled back with the trigger"
    with holding(url, "ACCESS SHARE", "processing_jobs"):
        succeeds(["alembic", *QUICK_GIVE_UP, "upgrade", "head"], url, project)
    assert version(url) == NEXT_REVISION
    succeeds(["make", "verify"], url, project)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("LISTEN processing_jobs")
        row = connection.execute(
            "INSERT INTO processing_jobs (workflow_type) VALUES ('x') RETURNING id"
        ).fetchone()
        assert row is not None
        notified = connection.notifies(timeout=60, stop_after=1)
        assert [notice.payload for notice in notified] == [str(row[0])]
        connection.execute("DELETE FROM processing_jobs")

    # ACCESS EXCLUSIVE: even a reader makes the drop give up.
    with holding(url, "ACCESS SHARE", "processing_jobs"):
        gives_up(["alembic", *QUICK_GIVE_UP, "downgrade", "-1"], url, project)
    assert version(url) == NEXT_REVISION
    succeeds(["alembic", "downgrade", "-1"], url, project)
    assert bodies(url) == before_bodies
    assert catalog.differences(before, snapshot(url), set(before)) == []
