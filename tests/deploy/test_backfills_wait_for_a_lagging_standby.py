"""Batched backfills go at the deploy's pace (-x backfill-batch, -x backfill-pause) and wait
while a real streaming standby (pg_basebackup -R, replay paused by the test) falls behind
more than -x max-replica-lag; past -x replica-lag-wait they stop in one line, every batch done
kept, and a re-run finishes. `make status` lists the standby and its lag."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool, text

from tests import topologies
from tests.helpers import BIN, REPO_ROOT, alembic_config, environment, run
from tests.servers import DatabaseServer

ROWS, BATCH = 1_000, 100
# A stalled standby counts as behind by how long it has stood still while this migration wrote
# (media_db/deploy/throttle.py): the batches are paced so that the backfill outlasts the lag.
PACE = "backfill-pause=300ms"
NULL_STATUSES = "SELECT count(*) FROM processing_jobs WHERE status IS NULL"
BATCHES_COMMITTED = "SELECT count(DISTINCT xmin::text) FROM processing_jobs"


@pytest.fixture
def replicated() -> Iterator[topologies.Replicated]:
    try:
        with topologies.primary() as primary, topologies.standby_of(primary) as standby:
            yield topologies.Replicated(primary, standby)
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


def scalar(url: URL, sql: str) -> int:
    engine = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        value = connection.scalar(text(sql))
    engine.dispose()
    return int(value or 0)


def jobs_with_null_status(url: URL) -> URL:
    """At 0002 with ROWS jobs whose status is NULL (written at 0001, before the CHECKs): what
    0003 backfills."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            text(
                "INSERT INTO processing_jobs (workflow_type, status) "
                f"SELECT 'transcode', NULL FROM generate_series(1, {ROWS})"
            )
        )
        connection.commit()
        command.upgrade(alembic_config(connection), "0002")
    return url


def primary_database(primary: topologies.Cluster) -> URL:
    return jobs_with_null_status(DatabaseServer("debian", primary.url()).create_database())


def backfill_behind_paused_standby(
    replicated: topologies.Replicated, log: Path, lag_wait: str
) -> tuple[URL, subprocess.Popen[str]]:
    """0003's backfill started, paced, while the standby's replay is paused."""
    url = primary_database(replicated.primary)
    caught_up(replicated.primary)
    replay(replicated.standby, paused=True)
    pace = (f"backfill-batch={BATCH}", PACE, "max-replica-lag=1s", f"replica-lag-wait={lag_wait}")
    return url, upgrade_in_background(url, log, *pace)


def replay(standby: topologies.Cluster, paused: bool) -> None:
    scalar(standby.url(), f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()::text IS NULL")


def caught_up(primary: topologies.Cluster) -> None:
    deadline = time.monotonic() + 120
    while scalar(
        primary.url(),
        "SELECT count(*) FROM pg_stat_replication "
        "WHERE replay_lsn IS NULL OR replay_lsn < pg_current_wal_lsn()",
    ):
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.05)


def upgrade_in_background(url: URL, log: Path, *options: str) -> subprocess.Popen[str]:
    x = [arg for option in options for arg in ("-x", option)]
    with log.open("w") as out:
        return subprocess.Popen(
            [str(BIN / "alembic"), *x, "upgrade", "0003"],
            cwd=REPO_ROOT,
            env=environment(url),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_for_line(log: Path, words: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while words not in log.read_text():
        assert process.poll() is None, f"ended before {words!r}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)


def test_backfill_waits_while_the_standby_lags_and_resumes_when_it_catches_up(
    replicated: topologies.Replicated, tmp_path: Path
) -> None:
    log = tmp_path / "upgrade.log"
    url, upgrade = backfill_behind_paused_standby(replicated, log, "10min")
    wait_for_line(log, "Backfill waits: standby standby1", upgrade)

    left = scalar(url, NULL_STATUSES)
    assert 0 < left < ROWS, "the backfill did not stop between batches"
    # While the standby stays paused, no further batch is written.
    waited_from = time.monotonic()
    while time.monotonic() - waited_from < 2:
        assert scalar(url, NULL_STATUSES) == left
        assert upgrade.poll() is None
        time.sleep(0.2)
    replay(replicated.standby, paused=False)

    assert upgrade.wait(timeout=300) == 0, log.read_text()[-2000:]
    assert "Backfill resumes: standby standby1 caught up" in log.read_text()
    assert scalar(url, NULL_STATUSES) == 0
    assert scalar(url, BATCHES_COMMITTED) == ROWS // BATCH


def test_a_standby_that_stays_behind_stops_the_backfill_in_one_line_and_a_rerun_finishes(
    replicated: topologies.Replicated, tmp_path: Path
) -> None:
    log = tmp_path / "upgrade.log"
    url, upgrade = backfill_behind_paused_standby(replicated, log, "3s")

    assert upgrade.wait(timeout=300) != 0
    output = log.read_text()
    failed = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, output[-2000:]
    assert "replica-lag-wait" in failed[0]
    assert "Traceback" not in output
    left = scalar(url, NULL_STATUSES)
    assert 0 < left < ROWS, "the batches done before the wait were not kept"

    replay(replicated.standby, paused=False)
    rerun = run([str(BIN / "alembic"), "upgrade", "0003"], environment(url))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert scalar(url, NULL_STATUSES) == 0


def test_make_status_lists_the_standby_and_says_when_it_is_on_one(
    replicated: topologies.Replicated,
) -> None:
    url = primary_database(replicated.primary)
    caught_up(replicated.primary)

    shown = run(["python", "-m", "media_db.deploy.status"], environment(url))

    assert "Standby standby1 (127.0.0.1, streaming): replay" in shown.stdout, shown.stdout
    assert "A standby (in recovery)" not in shown.stdout

    on_the_standby = replicated.standby.url(str(url.database))
    shown = run(["python", "-m", "media_db.deploy.status"], environment(on_the_standby))
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "! A standby (in recovery): read-only, a deploy cannot run here." in shown.stdout


def test_backfill_batch_and_pause_set_the_pace_without_a_standby(migrated: URL) -> None:
    url = jobs_with_null_status(_emptied(migrated))

    pace = ["-x", f"backfill-batch={BATCH}", "-x", "backfill-pause=10ms"]
    paced = run([str(BIN / "alembic"), *pace, "upgrade", "0003"], environment(url))

    assert paced.returncode == 0, paced.stderr[-2000:]
    assert scalar(url, NULL_STATUSES) == 0
    # Each batch commits on its own: one transaction id per batch of BATCH rows.
    assert scalar(url, BATCHES_COMMITTED) == ROWS // BATCH


def _emptied(url: URL) -> URL:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.downgrade(alembic_config(connection), "base")
    return url
