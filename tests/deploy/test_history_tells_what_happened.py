"""The migration history says what happened, however the run ended: a step whose history write
was blocked is recorded as that step's failure, naming the blocker; an attempt killed with
kill -9 leaves a row saying it was interrupted; revisions applied before the history table
existed are recorded, late and marked so, with their checksums, once it does."""

import os
import signal

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from media_db.deploy import history
from media_db.deploy.lock import MIGRATION_SESSION_NAME
from tests.deploy.test_backups_are_written_once_and_verified import alembic
from tests.deploy.test_fault_alembic_killed_mid_revision import BUILDING
from tests.faults import scalar, wait_until
from tests.helpers import HEAD, alembic_config, environment, run

SCRIPT = ScriptDirectory.from_config(alembic_config())
AFTER_0007 = [f"{n:04d}" for n in range(8, int(HEAD) + 1)]
ROWS = text(
    f"SELECT id, revision, direction, outcome, error, checksum FROM {history.TABLE.name} "
    "ORDER BY id"
)


def recorded_since(connection: Connection, first_id: int) -> list[tuple[str, str, str]]:
    connection.rollback()
    return [
        (row.revision, row.direction, row.outcome)
        for row in connection.execute(ROWS)
        if row.id > first_id
    ]


def last_id(connection: Connection) -> int:
    found = connection.scalar(text(f"SELECT coalesce(max(id), 0) FROM {history.TABLE.name}"))
    connection.rollback()
    return int(found or 0)


def test_a_blocked_history_write_is_its_steps_failure_naming_the_blocker(
    engine: Engine,
) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        command.downgrade(alembic_config(connection), "0007")  # the history table stays
        first = last_id(connection)
    blocker = engine.connect()
    blocker.execute(text(f"LOCK TABLE {history.TABLE.name} IN SHARE MODE"))
    pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar_one()
    upgrade = alembic(
        environment(engine.url),
        *("-x", "lock-timeout=1s", "-x", "lock-retries=1", "-x", "lock-retry-backoff=3s"),
        "upgrade", "head",
    )  # fmt: skip
    wait_until(lambda: upgrade.saw("Lock timeout (attempt 1 of 2"), "the first attempt fails", 60)
    assert upgrade.saw(f"blocking: pid {pid} "), upgrade.lines
    blocker.rollback()
    blocker.close()
    logs = upgrade.finish()
    assert upgrade.process.returncode == 0, logs
    with engine.connect() as connection:
        assert recorded_since(connection, first) == [
            ("0008", "upgrade", "failed"),
            *((rev, "upgrade", "succeeded") for rev in AFTER_0007),
        ]
        failure = connection.execute(
            text(f"SELECT error FROM {history.TABLE.name} WHERE id > :id ORDER BY id LIMIT 1"),
            {"id": first},
        ).scalar_one()
    assert "lock timeout" in failure, failure
    assert f"blocking: pid {pid} " in failure, failure


def test_an_attempt_killed_with_kill_9_leaves_a_row_saying_so(engine: Engine) -> None:
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "head")
        command.downgrade(alembic_config(connection), "0006")
        first = last_id(connection)
    writer = engine.connect()  # an open write: 0007's concurrent build waits for it
    writer.execute(text("UPDATE processing_jobs SET priority = priority"))
    killed = alembic(environment(engine.url), "-x", "lock_timeout=1min", "upgrade", "head")
    with engine.connect() as watcher:
        wait_until(lambda: scalar(watcher, BUILDING, name=MIGRATION_SESSION_NAME), "0007 builds")
    os.kill(killed.process.pid, signal.SIGKILL)
    killed.finish()
    writer.rollback()
    writer.close()
    with engine.connect() as connection:
        assert recorded_since(connection, first) == [("0007", "upgrade", "failed")]
        error = scalar(connection, f"SELECT error FROM {history.TABLE.name} WHERE id > {first}")
    assert error == history.INTERRUPTED
    again = run(["alembic", "upgrade", "head"], environment(engine.url))
    assert again.returncode == 0, again.stderr
    assert "interrupted attempt" in again.stderr
    with engine.connect() as connection:
        assert recorded_since(connection, first) == [
            ("0007", "upgrade", "failed"),
            ("0007", "upgrade", "succeeded"),
            *((rev, "upgrade", "succeeded") for rev in AFTER_0007),
        ]


def test_revisions_applied_before_the_history_existed_are_recorded_late(engine: Engine) -> None:
    env = environment(engine.url)
    for target in ("0003", "head"):
        done = run(["alembic", "upgrade", target], env)
        assert done.returncode == 0, done.stderr
    with engine.connect() as connection:
        rows = list(connection.execute(ROWS))
    assert [(r.revision, r.outcome) for r in rows] == [
        (f"{n:04d}", "succeeded") for n in range(1, int(HEAD) + 1)
    ]
    for row in rows:
        revision = SCRIPT.get_revision(row.revision)
        assert revision is not None
        assert row.checksum == history.checksum(revision.path)
        assert row.error == (history.RECORDED_LATE if row.revision <= "0003" else None)
    status = run(["python", "-m", "media_db.deploy.status"], env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "no checksum recorded" not in status.stdout
