"""n8n's raw writers and our migrations that lock several tables never deadlock: a writer that
inserts a media item and then its result (parent first), one that inserts a result for an
existing item (child first, media_items at its foreign key check), and one that inserts both in
one statement, racing the downgrades of 0004 and 0002 (`LOCK TABLE processing_jobs,
analysis_results, media_items`) and 0001's drops: every write commits, every migration finishes
without a retry."""

import threading
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, Engine, create_engine, pool, text
from sqlalchemy.exc import DBAPIError

from media_db.deploy.lock import MIGRATION_SESSION_NAME
from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for
from tests.faults import scalar, wait_until
from tests.helpers import BIN, REPO_ROOT, environment, start

pytestmark = pytest.mark.matrix

# No retry: a deadlock or a lock timeout fails the migration, and so the test.
NO_RETRY = ("lock-retries=0", "lock-timeout=60s")
MIGRATION_WAITS_FOR = """
    SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE NOT l.granted AND l.relation = to_regclass(:table) AND a.application_name = :name
"""
SLEEPING_WRITER = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
NEW_MEDIA = (
    "INSERT INTO media_items (source_url, source_type) VALUES (:url, 'youtube') RETURNING id"
)
NEW_RESULT = (
    "INSERT INTO analysis_results (media_item_id, analysis_type, provider) "
    "VALUES (:id, 'labels', 'n8n')"
)


def at(engine: Engine, revision: str) -> None:
    with engine.connect() as connection:
        command.upgrade(config_for(REPO_ROOT, connection), revision)


def alembic(url: URL, *args: str, **env: str) -> tuple[int, str]:
    x = [part for option in NO_RETRY for part in ("-x", option)]
    process = start([str(BIN / "alembic"), *x, *args], environment(url, **env))
    out, logs = process.communicate(timeout=300)
    return process.returncode, out + logs


NEW_JOB = "INSERT INTO processing_jobs (media_item_id, workflow_type) VALUES (:id, 'n8n')"
# Each downgrade that locks several tables: its target, and what else it needs to run.
DOWNGRADES = {"0004": "-1", "0002": "-1", "0001": "base"}


@pytest.mark.parametrize("revision", sorted(DOWNGRADES))
def test_a_parent_first_writer_and_the_downgrade_both_finish(
    fresh_database: FreshDatabase, tmp_path: Path, revision: str
) -> None:
    url = fresh_database()
    engine = create_engine(url, poolclass=pool.NullPool)
    at(engine, revision)
    consent = {"ALLOW_DATA_LOSS": "1", "MIGRATION_BACKUP_DIR": str(tmp_path / "backups")}
    with engine.connect() as writer, engine.connect() as watcher:
        media = writer.execute(text(NEW_MEDIA), {"url": "parent-first"}).scalar_one()
        x = [part for option in NO_RETRY for part in ("-x", option)]
        downgrade = start(
            [str(BIN / "alembic"), *x, "downgrade", DOWNGRADES[revision]],
            environment(url, **consent),
        )
        wait_until(
            lambda: scalar(
                watcher, MIGRATION_WAITS_FOR, table="media_items", name=MIGRATION_SESSION_NAME
            ),
            "the downgrade waits for the writer's media_items",
            120,
        )
        writer.execute(text(NEW_JOB), {"id": media})  # a deadlock would abort one of us
        writer.commit()
        out, logs = downgrade.communicate(timeout=300)
    assert downgrade.returncode == 0, out + logs
    if revision == "0001":  # the writer's rows were committed first: backed up, then dropped
        [manifest] = (tmp_path / "backups").glob("*/manifest.json")
        assert '"table": "processing_jobs"' in manifest.read_text()
    else:
        with engine.connect() as connection:
            assert scalar(connection, "SELECT count(*) FROM processing_jobs") == 1


def test_a_child_first_writer_and_0001s_drops_both_finish(
    fresh_database: FreshDatabase, tmp_path: Path
) -> None:
    url = fresh_database()
    engine = create_engine(url, poolclass=pool.NullPool)
    at(engine, "0001")
    with engine.begin() as connection:
        media = connection.execute(text(NEW_MEDIA), {"url": "child-first"}).scalar_one()
    failures: list[BaseException] = []

    def write_a_result_slowly() -> None:
        # The INSERT locks analysis_results at once, media_items only when its foreign key is
        # checked, after the sleep.
        try:
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO analysis_results (media_item_id, analysis_type, provider) "
                        "SELECT :id, 'labels', 'n8n' FROM pg_sleep(3)"
                    ),
                    {"id": media},
                )
        except DBAPIError as error:
            failures.append(error)

    writer = threading.Thread(target=write_a_result_slowly)
    writer.start()
    with engine.connect() as watcher:
        wait_until(lambda: scalar(watcher, SLEEPING_WRITER), "the writer holds analysis_results")
    backups = tmp_path / "backups"
    status, logs = alembic(
        url, "downgrade", "base", ALLOW_DATA_LOSS="1", MIGRATION_BACKUP_DIR=str(backups)
    )
    writer.join(timeout=120)
    assert not failures, failures
    assert status == 0, logs
    [manifest] = backups.glob("*/manifest.json")
    assert '"table": "analysis_results"' in manifest.read_text()  # the writer's row, backed up


ROUNDS = 6


def test_writers_racing_rounds_of_lock_taking_migrations_never_deadlock(
    fresh_database: FreshDatabase,
) -> None:
    url = fresh_database()
    engine = create_engine(url, poolclass=pool.NullPool)
    at(engine, "0004")
    stop, failures, written = threading.Event(), list[BaseException](), [0]

    def write(kind: str) -> None:
        with engine.connect() as connection:
            while not stop.is_set():
                try:
                    if kind == "one statement":
                        connection.execute(
                            text(
                                "WITH m AS (INSERT INTO media_items (source_url, source_type) "
                                "VALUES ('cte', 'youtube') RETURNING id) "
                                "INSERT INTO analysis_results (media_item_id, analysis_type, "
                                "provider) SELECT id, 'labels', 'n8n' FROM m"
                            )
                        )
                    else:
                        media = connection.execute(text(NEW_MEDIA), {"url": kind}).scalar_one()
                        time.sleep(0.01)  # n8n between its two statements
                        connection.execute(text(NEW_RESULT), {"id": media})
                        connection.execute(text(NEW_JOB), {"id": media})
                    connection.commit()
                    written[0] += 1
                except DBAPIError as error:
                    connection.rollback()
                    failures.append(error)

    writers = [threading.Thread(target=write, args=(k,)) for k in ("one statement", "two")]
    for thread in writers:
        thread.start()
    try:
        with engine.connect() as connection:
            config = config_for(REPO_ROOT, connection, *NO_RETRY)
            for _ in range(ROUNDS):
                command.downgrade(config, "0001")  # through 0004's and 0002's LOCK TABLE
                command.upgrade(config, "0004")  # 0002's upgrade locks the same three
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=60)
    assert not failures, failures[:3]
    assert written[0] > ROUNDS
