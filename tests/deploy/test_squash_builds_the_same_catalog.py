"""`make squash UPTO=<id>` (in a copy of the project) replaces base..UPTO by one baseline: a
database built from the baseline and the later revisions has the catalog the whole chain builds
(at UPTO, NOT VALID CHECKs included, and at head, where `make verify` passes) and records the
baseline in its migration history; comments, a % and colons in the SQL come through; a
database the old chain took past UPTO upgrades to head with the squashed project, no stamp, and
its checksums, archived ones included, still verify (a changed archived file is flagged); a
downgrade below the baseline, a database still below UPTO, and `make adopt` (0001 is gone) are
refused in one line, changing nothing."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import URL, create_engine, pool, text

from media_db.deploy import catalog, history, history_shape, squashed
from media_db.deploy.project import VERSION_TABLE
from media_db.dev.squash import pg_dump
from tests import model_edits
from tests.autogen.test_expand_contract_keeps_every_writer import migrate, ok
from tests.conftest import FreshDatabase
from tests.deploy.test_adopt_plan_built_database import plan_built
from tests.helpers import (
    HEAD,
    NEXT_REVISION,
    OUR_REVISIONS,
    REPO_ROOT,
    edit,
    environment,
    project_copy,
    run,
)
from tests.servers import DatabaseServer

# 0003: 0002's CHECKs still NOT VALID, a backfill squashed. 0009: a function, its trigger,
# storage parameters and the migration history table in the baseline.
MIDDLES = [revision for revision in ("0003", "0009") if revision in OUR_REVISIONS[:-1]]
# Set by this machine's server on every column it creates (media_db/dev/squash.py), and psql's
# per-dump key: neither is schema.
NOT_SCHEMA = re.compile(r"^(.*pg_attver=.*|\\(un)?restrict .*|-- Dumped .*)$", re.M)


@dataclass
class Squashed:
    project: Path
    upto: str
    after: str  # the revision after UPTO
    baseline: Path


@pytest.fixture(scope="module", params=MIDDLES)
def squashed_project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, server: DatabaseServer
) -> Squashed:
    upto = request.param
    project = project_copy(tmp_path_factory.mktemp(f"squash_{upto}"))
    done = run(["make", "squash", f"UPTO={upto}"], environment(server.admin_url), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    [baseline] = (project / "alembic" / "versions").glob(f"*_{upto}_baseline.py")
    after = OUR_REVISIONS[OUR_REVISIONS.index(upto) + 1]
    return Squashed(project, upto, after, baseline)


def alembic(project: Path, url: URL, step: str, target: str) -> None:
    """An upgrade, in process on the copy's revisions (the squash is the subject, not the CLI)."""
    migrate(project, url, step, target)


def schema(url: URL) -> tuple[str, catalog.Catalog, dict[str, str]]:
    """Our schema as pg_dump prints it, and as the catalog comparison reads it."""
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        snapshot = catalog.snapshot(connection)
        functions = catalog.functions(connection, "public")
    return NOT_SCHEMA.sub("", pg_dump(url)), snapshot, functions


def assert_same_schema(built: URL, chain: URL) -> None:
    (dump, snapshot, functions), (want_dump, want, want_functions) = schema(built), schema(chain)
    assert catalog.differences(want, snapshot, set(want) | set(snapshot)) == []
    assert catalog.function_differences(want_functions, functions) == []
    assert dump == want_dump


def version(url: URL) -> list[str]:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return list(connection.scalars(text(f"SELECT version_num FROM {VERSION_TABLE}")))


def test_alembic_loads_the_baseline_in_place_of_what_it_replaced(
    squashed_project: Squashed,
) -> None:
    project, upto = squashed_project.project, squashed_project.upto
    script = ScriptDirectory.from_config(Config(str(project / "alembic.ini")))
    assert history_shape.problems(script) == []
    assert [found.revision for found in script.walk_revisions()][-1] == upto  # the base
    baseline = script.get_revision(upto)
    assert baseline is not None
    assert baseline.down_revision is None
    assert squashed.replaces(baseline) == OUR_REVISIONS[: OUR_REVISIONS.index(upto) + 1]
    following = script.get_revision(squashed_project.after)
    assert following is not None
    assert following.down_revision == upto
    archived = sorted(path.name for path in (project / "alembic" / "versions_archive").iterdir())
    assert archived == sorted(
        path.name
        for path in (REPO_ROOT / "alembic" / "versions").glob("*.py")
        if int(path.name.split("_")[3]) <= int(upto)
    )


def test_the_baseline_passes_the_linters(squashed_project: Squashed) -> None:
    """ruff as `make lint` runs it, and squawk (`make lint-sql`), which skips its downgrade."""
    project, baseline = squashed_project.project, str(squashed_project.baseline)
    for command in (["ruff", "check", baseline], ["ruff", "format", "--check", baseline]):
        done = run(command, environment(), cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
    done = run(["make", "lint-sql"], environment(), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_baseline_builds_the_catalog_the_chain_built(
    squashed_project: Squashed, fresh_database: FreshDatabase
) -> None:
    project, upto = squashed_project.project, squashed_project.upto
    built, chain = fresh_database(), fresh_database()
    alembic(project, built, "upgrade", upto)
    alembic(REPO_ROOT, chain, "upgrade", upto)
    assert_same_schema(built, chain)

    alembic(project, built, "upgrade", "head")
    alembic(REPO_ROOT, chain, "upgrade", "head")
    assert_same_schema(built, chain)
    assert version(built) == [HEAD]
    verify = run(["make", "verify"], environment(built), cwd=project)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    with create_engine(built, poolclass=pool.NullPool).connect() as connection:
        recorded = connection.execute(
            text(
                f"SELECT revision, outcome, checksum FROM {history.TABLE.name} "
                "WHERE direction = 'upgrade' ORDER BY id"
            )
        ).all()
    assert recorded[0] == (upto, "succeeded", history.checksum(squashed_project.baseline))
    # From the baseline up, a user's own revisions above ours included.
    walked = ScriptDirectory.from_config(Config(str(project / "alembic.ini"))).walk_revisions()
    assert [row[0] for row in recorded] == [script.revision for script in reversed(list(walked))]


def status(project: Path, url: URL) -> dict[str, object]:
    done = run(["python", "-m", "media_db.deploy.status", "--json"], environment(url), cwd=project)
    assert done.returncode in (0, 1), done.stderr
    return dict(json.loads(done.stdout))


def test_a_database_past_upto_upgrades_to_head_untouched(
    squashed_project: Squashed, fresh_database: FreshDatabase
) -> None:
    project = squashed_project.project
    deployed = fresh_database()
    alembic(REPO_ROOT, deployed, "upgrade", squashed_project.after)  # before the squash

    done = run(["make", "upgrade"], environment(deployed), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert version(deployed) == [HEAD]
    found = status(project, deployed)
    assert (found["changed_since_applied"], found["without_checksum"]) == ([], [])
    verify = run(["make", "verify"], environment(deployed), cwd=project)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_archived_revisions_checksums_still_verify(
    squashed_project: Squashed, fresh_database: FreshDatabase
) -> None:
    project = squashed_project.project
    deployed = fresh_database()  # its history holds a row for every revision, 0001 on
    alembic(REPO_ROOT, deployed, "upgrade", "head")
    found = status(project, deployed)
    assert (found["changed_since_applied"], found["without_checksum"]) == ([], [])

    [first] = (project / "alembic" / "versions_archive").glob("*_0001_*.py")
    kept = first.read_text()
    try:
        edit(first, ('revision: str = "0001"', 'revision: str = "0001"\nCHANGED = True'))
        assert status(project, deployed)["changed_since_applied"] == ["0001"]
    finally:
        first.write_text(kept)


def test_a_downgrade_below_the_baseline_is_refused_in_one_line(
    squashed_project: Squashed, fresh_database: FreshDatabase
) -> None:
    project, upto = squashed_project.project, squashed_project.upto
    url = fresh_database()
    alembic(project, url, "upgrade", "head")

    done = run(["make", "downgrade", "REV=base"], environment(url), cwd=project)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    [line] = [line for line in output.splitlines() if line.startswith("FAILED:")]
    assert f"Refusing to downgrade below {upto}: it is a baseline" in line
    assert f"REV={upto} is as low as this history goes" in line
    assert "Traceback" not in output
    assert version(url) == [HEAD]  # not one step was taken, the revisions above included


def test_a_database_below_upto_and_make_adopt_are_refused_in_one_line(
    squashed_project: Squashed, fresh_database: FreshDatabase
) -> None:
    project, upto = squashed_project.project, squashed_project.upto
    below = OUR_REVISIONS[OUR_REVISIONS.index(upto) - 1]
    url = fresh_database()
    alembic(REPO_ROOT, url, "upgrade", below)  # not past UPTO when the history was squashed

    done = run(["make", "upgrade"], environment(url), cwd=project)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"FAILED: The database is at {below}, which the baseline {upto} replaced" in output, (
        output
    )
    assert "Traceback" not in output
    assert version(url) == [below]
    done = run(["make", "status"], environment(url), cwd=project)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert f"The database is at {below}, which the baseline {upto} replaced" in said, said
    assert "up to date" not in said, said
    assert "Traceback" not in said, said

    by_hand = fresh_database()
    plan_built(by_hand)
    done = run(["make", "adopt"], environment(by_hand), cwd=project)
    assert done.returncode != 0
    assert f"revision 0001 is no longer loaded: the baseline {upto} replaced it" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


# Raw: `\:name` is how text() (op.execute) takes a colon that is no bind parameter.
COMMENTED = r'''"""Comments our tables, with a % and colons in the SQL.

Why: a test of `make squash`.

Revision ID: {revision}
Revises: {down}
Create Date: 2026-12-07
"""

from alembic import op

revision: str = "{revision}"
down_revision: str | None = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        r"COMMENT ON TABLE media_items IS 'one row per file: 100% of them, ratio 1:2, \:name'"
    )
    op.execute("COMMENT ON COLUMN processing_jobs.priority IS 'higher first'")


def downgrade() -> None:
    op.execute("COMMENT ON TABLE media_items IS NULL")
    op.execute("COMMENT ON COLUMN processing_jobs.priority IS NULL")
'''


def test_comments_a_percent_and_colons_come_through_the_baseline(
    tmp_path: Path, server: DatabaseServer, fresh_database: FreshDatabase
) -> None:
    """UPTO=head here: the chain is ours and a revision that comments two objects."""
    for name in ("chain", "squashed"):
        (tmp_path / name).mkdir()
    chain, squashed_copy = (project_copy(tmp_path / name) for name in ("chain", "squashed"))
    for project in (chain, squashed_copy):
        path = project / "alembic" / "versions" / f"2026_12_07_{NEXT_REVISION}_comments.py"
        path.write_text(COMMENTED.format(revision=NEXT_REVISION, down=HEAD))
    squash = ["make", "squash", f"UPTO={NEXT_REVISION}"]
    done = run(squash, environment(server.admin_url), cwd=squashed_copy)
    assert done.returncode == 0, done.stdout + done.stderr

    built, original = fresh_database(), fresh_database()
    alembic(squashed_copy, built, "upgrade", "head")
    alembic(chain, original, "upgrade", "head")
    assert_same_schema(built, original)
    with create_engine(built, poolclass=pool.NullPool).connect() as connection:
        comment = connection.scalar(text("SELECT obj_description('media_items'::regclass)"))
    assert comment == "one row per file: 100% of them, ratio 1:2, :name"


# A column of the test's own (tests/model_edits.py says why), renamed in the expand squashed.
PROBE_FILE = "probe_file: Mapped[str | None] = mapped_column(Text)"
RENAMED = f'{PROBE_FILE[:-1]}, info={{"renamed_from": "probe_path"}})'


def test_a_squash_in_the_middle_of_an_expand_contract_keeps_it_going(
    tmp_path: Path, fresh_database: FreshDatabase, head_copy: FreshDatabase
) -> None:
    """The baseline is squashed up to a rename's expand: a database deployed at the expand (its
    sync trigger in place) and a new one built from the baseline have the same catalog, the
    transition in flight included, and both take the contract written after the squash."""
    project = project_copy(tmp_path)
    models = project / "models" / "media.py"
    deployed, built = head_copy(), fresh_database()
    model_edits.add_column(models, "MediaItem", model_edits.PROBE_PATH)
    ok(["make", "revision", "M=probe column"], environment(deployed), project)
    alembic(project, deployed, "upgrade", "head")
    edit(models, (model_edits.PROBE_PATH, RENAMED))
    ok(["make", "revision", "M=rename probe_path"], environment(deployed), project)
    alembic(project, deployed, "upgrade", "head")  # deployed, the expand in flight
    expand = f"{int(NEXT_REVISION) + 1:04d}"

    ok(["make", "squash", f"UPTO={expand}"], environment(deployed), project)
    alembic(project, built, "upgrade", "head")
    assert_same_schema(built, deployed)

    edit(models, (RENAMED, PROBE_FILE))
    ok(["make", "revision", "M=contract probe_file"], environment(deployed), project)
    for url in (deployed, built):
        alembic(project, url, "upgrade", "head")
        ok(["make", "verify"], environment(url), project)
    assert_same_schema(built, deployed)
