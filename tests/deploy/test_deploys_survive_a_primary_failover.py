"""A deploy cut by a primary failover of a real pg_auto_failover formation (tests/topologies.py),
through the multi-host URL it hands out (`target_session_attrs=read-write`), once with
`pg_autoctl perform failover` and once with kill -9 of the primary's postmaster:

- a migration cut half-way through 0003's batched backfill stops in one line naming the cause,
  and the same command run again finishes on the new primary, `make verify` clean;
- an expand's batched backfill (a rename, as `make revision` writes it) cut by the failover
  resumes where the new primary's data stands, and loses no row; the history on the new
  primary says the cut attempt failed, then the re-run succeeded;
- the replica-lag throttle waiting on a standby stops waiting in one line saying what became of
  the primary: perform failover promotes that standby, and the line names it; after kill -9 of
  the postmaster the keeper restarts it within a second or two, racing the monitor's promotion,
  and the line says which of the two it found (promoted, or the primary restarted).

Each writes down how long after the fault's start the re-run reached head (tests/failovers.py).
Marked `failover`: `make test-failover` runs them (CI does, after `make test`)."""

import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import URL, create_engine, pool
from sqlalchemy.exc import ProgrammingError

from media_db.deploy.history import INTERRUPTED, TABLE
from media_db.deploy.project import VERSION_TABLE
from tests import model_edits, topologies
from tests.autogen.test_expand_contract_keeps_every_writer import RENAMED
from tests.failovers import (
    DEADLINE_SECONDS,
    Fault,
    failover,
    in_the_background,
    migrated_database,
    over,
    record,
    scalar,
    writable,
)
from tests.helpers import (
    HEAD,
    NEXT_REVISION,
    REPO_ROOT,
    Followed,
    edit,
    environment,
    project_copy,
    run,
    start,
)

pytestmark = pytest.mark.failover

NULL_JOBS = 30_000  # six batches of 0003's backfill
NULL_STATUSES = "SELECT count(*) FROM processing_jobs WHERE status IS NULL"


def until_head(
    formation: topologies.Formation, args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT
) -> str:
    """The cut command run again until it finishes, as an operator would. After kill -9 the
        monitor may still fail over once the keeper has restarted the old primary: while no node
        takes writes a deploy is refused as unavailable, and a re-run that reached the old primary
        is cut again when it is demoted. Either way it says so in one line. Returns what the runs
    said."""
    deadline, said = time.monotonic() + DEADLINE_SECONDS, ""
    while (rerun := run(args, env, timeout=DEADLINE_SECONDS, cwd=cwd)).returncode != 0:
        said += rerun.stdout + rerun.stderr
        assert "Traceback" not in said, said
        assert "Cannot connect" in said or "FAILED: upgrade" in said, said
        assert time.monotonic() < deadline, said
        over(formation)
    return said + rerun.stdout + rerun.stderr


def cut_in_one_line(cut: subprocess.Popen[str], revision: str) -> None:
    """The cut run's output, if it failed: one FAILED line naming the step, no traceback."""
    out, err = cut.communicate(timeout=DEADLINE_SECONDS)
    if cut.returncode != 0:
        assert "Traceback" not in out + err, out + err
        failed = [line for line in (out + err).splitlines() if line.startswith("FAILED")]
        assert len(failed) == 1, out + err
        assert f"-> {revision} failed" in failed[0], failed[0]


def test_a_migration_cut_by_a_failover_finishes_when_run_again_on_the_new_primary(
    formation: topologies.Formation, fault: Fault, request: pytest.FixtureRequest
) -> None:
    url = migrated_database(formation, "0001")
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        # n8n's explicit NULLs, which 0003 backfills in committed batches.
        connection.exec_driver_sql(
            "INSERT INTO processing_jobs (workflow_type, status) "
            f"SELECT 'transcode', NULL FROM generate_series(1, {NULL_JOBS})"
        )
    env = environment(url)
    upgrade = ["alembic", "-x", "backfill-pause=1s", "upgrade", "head"]
    cut = start(upgrade, env)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while scalar(url, NULL_STATUSES) == NULL_JOBS:
        assert cut.poll() is None, cut.communicate()
        assert time.monotonic() < deadline, "0003's first batch never committed"
        time.sleep(0.1)
    with in_the_background(fault, formation) as faulted:
        cut_in_one_line(cut, "0003")
        writable(formation)
        record(request, "a primary takes writes", time.monotonic() - faulted)
        until_head(formation, upgrade, env)
        record(request, "0003's re-run reaches head", time.monotonic() - faulted)
    assert scalar(url, NULL_STATUSES) == 0
    assert scalar(url, f"SELECT version_num FROM {VERSION_TABLE}") == HEAD
    verified = run(["python", "-m", "media_db.deploy.verify"], env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


ROWS = 10_000  # nine batches of 1,000 at the pace below (a tenth of probe_path is NULL)
PACE = ["-x", "backfill-batch=1000", "-x", "backfill-pause=300ms"]
# The rows as the expand found them: what no failover may change.
CONTENT = (
    "SELECT count(*) || ':' || md5(string_agg(id::text || '=' || coalesce(probe_path, '-'), ',' "
    "ORDER BY id)) FROM media_items"
)
LEFT = "SELECT count(*) FROM media_items WHERE probe_file IS NULL AND probe_path IS NOT NULL"


def filled(url: URL) -> int:
    """Rows the expand's backfill has filled (0 before it added the column)."""
    try:
        return int(scalar(url, "SELECT count(*) FROM media_items WHERE probe_file IS NOT NULL"))
    except ProgrammingError:
        return 0


def test_an_expands_backfill_cut_by_a_failover_resumes_on_the_new_primary_and_loses_no_row(
    formation: topologies.Formation,
    fault: Fault,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    url = migrated_database(formation)
    env, project = environment(url), project_copy(tmp_path)
    models = project / "models" / "media.py"
    model_edits.existing_probe_path(models, url)
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO media_items (source_url, source_type, probe_path) SELECT 'seed-' || g, "
            "'seed', CASE WHEN mod(g, 10) = 0 THEN NULL ELSE '/seed/' || g END "
            f"FROM generate_series(1, {ROWS}) g"
        )
    content = scalar(url, CONTENT)
    edit(models, (model_edits.PROBE_PATH_LINE, RENAMED))
    # What `make revision` runs, without make's own install check.
    revision = ["alembic", "revision", "--autogenerate", "-m", "rename probe_path"]
    written = run(revision, env, cwd=project)
    assert written.returncode == 0, written.stdout + written.stderr

    upgrade = ["alembic", *PACE, "upgrade", "head"]
    cut = start(upgrade, env, cwd=project)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while filled(url) == 0:
        assert cut.poll() is None, cut.communicate()
        assert time.monotonic() < deadline, "the expand's first batch never committed"
        time.sleep(0.1)
    with in_the_background(fault, formation) as faulted:
        cut_in_one_line(cut, NEXT_REVISION)
        writable(formation)
        record(request, "a primary takes writes", time.monotonic() - faulted)
        # Where the new primary's data stands: the batches it holds, and what is left.
        held, left = filled(url), scalar(url, LEFT)
        before_the_rerun = int(scalar(url, "SELECT pg_current_xact_id()::text"))
        said = until_head(formation, upgrade, env, project)
        record(request, "the expand's re-run reaches head", time.monotonic() - faulted)

    assert held > 0, "no batch of the cut run reached the new primary: nothing to resume"
    assert left > 0, "the backfill ended before the fault: it proved nothing"
    assert scalar(url, CONTENT) == content, "a row was lost, added or changed"
    mismatched = "SELECT count(*) FROM media_items WHERE probe_file IS DISTINCT FROM probe_path"
    assert scalar(url, mismatched) == 0
    # The re-run filled only what the new primary still lacked: no batch was done twice.
    rewritten = f"SELECT count(*) FROM media_items WHERE xmin::text::bigint > {before_the_rerun}"
    assert scalar(url, rewritten) == left
    assert scalar(url, f"SELECT version_num FROM {VERSION_TABLE}") == NEXT_REVISION
    verified = run(["python", "-m", "media_db.deploy.verify"], env, cwd=project)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The history on the new primary: the cut attempt failed (the row saying it was
    # interrupted, committed before its work began and so before any batch the new primary
    # holds; or its outcome, if the cut run reached the new primary to write it), then the
    # re-run succeeded, once.
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        rows = connection.execute(
            TABLE.select().where(TABLE.c.revision == NEXT_REVISION).order_by(TABLE.c.id)
        ).all()
    assert [row.outcome for row in rows] == ["failed"] * (len(rows) - 1) + ["succeeded"], rows
    assert len(rows) > 1, rows
    assert all(row.error for row in rows[:-1]), rows
    if rows[0].error == INTERRUPTED:  # and the re-run said so
        assert f"Found an interrupted attempt: upgrade {NEXT_REVISION}, started" in said, said


STANDBY_ROWS = 3_000  # thirty batches of 100 at the pace below
THROTTLE = ["-x", "backfill-batch=100", "-x", "backfill-pause=300ms", "-x", "max-replica-lag=1s"]


def test_the_backfill_stops_waiting_for_a_standby_a_failover_promotes_and_says_so(
    formation: topologies.Formation, fault: Fault
) -> None:
    """perform failover promotes the standby the backfill waits for: the one line names it. A
    kill -9 races the keeper restarting the primary against the monitor promoting the standby
    (its replay paused here): the one line says which of the two the throttle found."""
    url = migrated_database(formation, "0001")
    with create_engine(url, poolclass=pool.NullPool).begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO processing_jobs (workflow_type, status) "
            f"SELECT 'transcode', NULL FROM generate_series(1, {STANDBY_ROWS})"
        )
    [secondary] = set(formation.node_ports) - {formation.primary_port()}
    standby = f"host=127.0.0.1 port={secondary} user=postgres dbname=postgres"
    with psycopg.connect(standby, autocommit=True) as connection:
        connection.execute("SELECT pg_wal_replay_pause()")
    env = environment(url)
    upgrade = ["alembic", *THROTTLE, "upgrade", "head"]
    cut = Followed(start(upgrade, env))
    cut.wait_for("Backfill waits: standby ")
    [waited_for] = re.findall(r"Backfill waits: standby (\S+):", "".join(cut.stderr))

    fault(formation)
    out, err = cut.communicate(DEADLINE_SECONDS)

    assert cut.process.returncode != 0, out + err
    assert "Traceback" not in out + err, out + err
    [failed] = [line for line in (out + err).splitlines() if line.startswith("FAILED")]
    promoted = (
        f"Backfill stopped waiting for standby {waited_for}: standby {waited_for} is the primary "
        f"now (promoted: timeline "
    )
    restarted = f"Backfill stopped waiting for standby {waited_for}: the primary restarted ("
    if fault is failover:
        assert promoted in failed, failed
    else:
        assert promoted in failed or restarted in failed, failed
    if promoted in failed:
        assert f", at 127.0.0.1:{secondary})" in failed, failed
    if fault is failover:
        assert formation.primary_port() == secondary
    until_head(formation, upgrade, env)
    assert scalar(url, NULL_STATUSES) == 0
