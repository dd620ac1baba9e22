"""A primary key's type change whose foreign keys were carried (`processing_limits.key`
narrowed, `processing_jobs.probe_limit_key` referencing it), cut after some of its transactions
committed, finishes when the same command is run again once the cause is fixed, and loses
nothing (issue 33).

Each run is cut where a step fails after the steps before it committed. The expand is cut
at the shadow's unique index (two keys equal once narrowed: the failed build leaves it
INVALID), then at its foreign key copy's VALIDATE (the unique indexes built, the cutover not
yet run): a referencing row that names no key, written with the foreign keys' triggers off (as
a bulk load or a replica might), fails it. Its way down is cut the same way at the foreign
key's VALIDATE, after the transaction that moved the key back to the old column and dropped
the new one committed, and then after its last VALIDATE (stamped back to the expand). Each
time the cause is mended and the plain command run again must reach its target, with every
key and every job as they were and the catalog the direction leads to.
"""

from pathlib import Path

from sqlalchemy import URL

from media_db.deploy import catalog
from media_db.deploy.project import VERSION_TABLE
from tests import faults, model_edits
from tests.autogen.test_a_primary_keys_type_change_keeps_a_unique_key_at_every_step import (
    KEY,
    LONG,
    NARROWED,
    PRIMARY_KEY,
    REFERENCING,
    REFERENCING_DDL,
)
from tests.autogen.test_autogenerate_writes_lock_safe_revisions import snapshot
from tests.autogen.test_expand_contract_keeps_every_writer import (
    assert_no_drift,
    catalog_is,
    execute,
    migrate,
    ok,
    scalar,
)
from tests.conftest import FreshDatabase
from tests.faults import RETRY_NOTHING, failure_line
from tests.helpers import BIN, HEAD, NEXT_REVISION, edit, environment, project_copy, run, start

FKEY = "processing_jobs_probe_limit_key_fkey"
VERSION = f"SELECT version_num FROM {VERSION_TABLE}"
# What the keys and the jobs hold: compared before the cut and after the re-run.
HELD = (
    "SELECT (SELECT count(*) || ':' || sum(max_running) || ':' || md5(string_agg(key, ',' "
    "ORDER BY key)) FROM processing_limits) || '/' || (SELECT count(*) || ':' || "
    "md5(string_agg(probe_limit_key, ',' ORDER BY probe_limit_key)) FROM processing_jobs)"
)
ORPHAN = "orphan-key"
DUPLICATE = LONG + "x"  # the same as LONG in the new type's 40 characters


def orphan_job(url: URL) -> None:
    """A job naming no key, written past the foreign key's trigger: its next VALIDATE fails."""
    execute(
        url,
        "SET LOCAL session_replication_role = replica; "
        "INSERT INTO processing_jobs (workflow_type, probe_limit_key) "
        f"VALUES ('orphan', '{ORPHAN}')",
    )


def cut(project: Path, env: dict[str, str], *command: str) -> str:
    """`alembic <command>`, which must fail (one line, no traceback): what it said."""
    failed = run(["alembic", *command], env, cwd=project)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said
    assert "Traceback" not in said, said
    return said


def narrowing(
    tmp_path: Path, head_copy: FreshDatabase
) -> tuple[Path, URL, dict[str, str], str, catalog.Catalog]:
    """A project whose next revision narrows the referenced key, written, not applied, over
    seeded keys and jobs: the project, the URL, its environment, what the tables hold
    (HELD) and the catalog."""
    project, url = project_copy(tmp_path), head_copy()
    env, models = environment(url), project / "models" / "media.py"
    model_edits.existing_column(models, url, "ProcessingJob", REFERENCING, REFERENCING_DDL)
    execute(
        url,
        "INSERT INTO processing_limits (key, max_running) "
        f"SELECT 'seed-' || g, 1 + g % 7 FROM generate_series(1, 6000) g UNION ALL "
        f"SELECT '{LONG}', 1; "
        "INSERT INTO processing_jobs (workflow_type, probe_limit_key) "
        "SELECT 'seeded', 'seed-' || g FROM generate_series(1, 6000, 3) g",
    )
    held, before = scalar(url, HELD), snapshot(url)
    edit(models, (KEY, NARROWED))
    ok(["make", "revision", "M=narrow processing_limits.key"], env, project)
    return project, url, env, held, before


def test_a_cut_primary_key_type_change_finishes_when_run_again_both_ways(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    project, url, env, held, before = narrowing(tmp_path, head_copy)

    # The expand, cut at the shadow's unique index (two keys the same once narrowed: the
    # failed build leaves it INVALID), then at its foreign key copy's VALIDATE.
    execute(url, f"INSERT INTO processing_limits (key) VALUES ('{DUPLICATE}')")
    orphan_job(url)
    said = cut(project, env, "upgrade", "head")
    assert "processing_limits_pkey__new" in said, said
    execute(url, f"DELETE FROM processing_limits WHERE key = '{DUPLICATE}'")
    said = cut(project, env, "upgrade", "head")
    assert FKEY in said, said
    assert scalar(url, VERSION) == HEAD
    assert scalar(url, "SELECT to_regclass('processing_limits_pkey__old') IS NOT NULL")
    execute(url, f"DELETE FROM processing_jobs WHERE probe_limit_key = '{ORPHAN}'")
    ok(["alembic", "upgrade", "head"], env, project)
    assert scalar(url, VERSION) == NEXT_REVISION
    assert scalar(url, PRIMARY_KEY) == "processing_limits_pkey PRIMARY KEY (key)"
    assert scalar(url, "SELECT count(*) FROM processing_limits WHERE key__old <> key") == 1
    assert_no_drift(ok(["make", "verify"], env, project))
    expanded = snapshot(url)

    # The way down, cut at the foreign key's VALIDATE: the key is back on the old column, the
    # new column gone, and the revision is still the expand.
    orphan_job(url)
    said = cut(project, env, "downgrade", "-1")
    assert FKEY in said, said
    assert scalar(url, VERSION) == NEXT_REVISION
    assert scalar(url, f"SELECT NOT convalidated FROM pg_constraint WHERE conname = '{FKEY}'")
    assert scalar(url, "SELECT to_regclass('processing_limits_pkey__old') IS NULL")
    execute(url, f"DELETE FROM processing_jobs WHERE probe_limit_key = '{ORPHAN}'")
    ok(["alembic", "downgrade", "-1"], env, project)
    assert scalar(url, VERSION) == HEAD
    catalog_is(url, before)
    assert scalar(url, HELD) == held  # every key, its value and every job, as they were
    # Cut after its last VALIDATE, before the version moved: run again, it finishes the same.
    migrate(project, url, "stamp", NEXT_REVISION)
    ok(["alembic", "downgrade", "-1"], env, project)
    catalog_is(url, before)
    assert scalar(url, HELD) == held

    # And up again from there, as far as it went before.
    ok(["alembic", "upgrade", "head"], env, project)
    catalog_is(url, expanded)


def test_a_way_down_cut_by_a_lock_timeout_at_its_validate_finishes_when_run_again(
    tmp_path: Path, head_copy: FreshDatabase
) -> None:
    """As tests/deploy/test_fault_lock_blocker_during_0005_validate.py cuts 0005's way down:
    a reader keeps the way down waiting for processing_jobs, and a blocker queued behind it
    holds that table the moment the transaction moving the key back commits, so the VALIDATE
    after it times out (no retry). Once the blocker is gone the same command finishes."""
    project, url, env, held, before = narrowing(tmp_path, head_copy)
    ok(["alembic", "upgrade", "head"], env, project)
    # The way down waits for processing_jobs holding processing_limits (its first lock).
    with faults.cut_by_a_queued_blocker(
        url,
        "processing_jobs",
        lambda: start([str(BIN / "alembic"), *RETRY_NOTHING, "downgrade", "-1"], env, project),
        lambda watcher: faults.scalar(
            watcher, faults.WAITING_FOR, table="processing_jobs", mode="AccessExclusiveLock"
        ),
    ) as downgrade:
        line = failure_line(downgrade)
        assert "gave up after 1 attempt" in line, line
        assert f"the database is at revision {NEXT_REVISION}" in line, line
        moved_back = "SELECT to_regclass('processing_limits_pkey__old') IS NULL"
        assert scalar(url, moved_back)

    ok(["alembic", "downgrade", "-1"], env, project)
    assert scalar(url, VERSION) == HEAD
    catalog_is(url, before)
    assert scalar(url, HELD) == held
