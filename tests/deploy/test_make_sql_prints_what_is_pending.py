"""`make sql` prints what is pending on the configured database, from its revision to head; with
none configured the whole history; `RANGE` any span; an unreachable database prints no SQL and
says how to get it without one. The SQL is Alembic's own offline output."""

from alembic import command
from sqlalchemy import URL, create_engine, pool

from media_db.deploy.project import VERSION_TABLE
from media_db.errors import EXIT_UNAVAILABLE
from tests.conftest import FreshDatabase
from tests.deploy.test_dropped_data_is_never_lost_unasked import config_for
from tests.helpers import HEAD, REPO_ROOT, environment, run

BEFORE_HEAD = f"{int(HEAD) - 2:04d}"


def at(url: URL, revision: str) -> None:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(config_for(REPO_ROOT, connection), revision)


def upgrades_in(sql: str) -> list[str]:
    return [line.split("upgrade ", 1)[1] for line in sql.splitlines() if "Running upgrade" in line]


def test_a_database_behind_head_gets_only_its_pending_revisions(
    fresh_database: FreshDatabase,
) -> None:
    url = fresh_database()
    at(url, BEFORE_HEAD)
    done = run(["make", "sql"], environment(url))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("-- Pending on "), first
    assert f"now at {BEFORE_HEAD}" in first, first
    next_one = f"{int(BEFORE_HEAD) + 1:04d}"
    assert upgrades_in(done.stdout) == [f"{BEFORE_HEAD} -> {next_one}", f"{next_one} -> {HEAD}"]
    assert f"UPDATE {VERSION_TABLE} SET version_num='{HEAD}'" in done.stdout

    at(url, "head")
    done = run(["make", "sql"], environment(url))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("-- Nothing pending: ")
    assert f"at head ({HEAD})" in done.stdout
    assert upgrades_in(done.stdout) == []


def test_with_no_database_or_with_a_range_the_span_is_as_asked(
    fresh_database: FreshDatabase,
) -> None:
    whole = run(["make", "sql"], environment())
    assert whole.returncode == 0, whole.stderr
    assert upgrades_in(whole.stdout)[0] == " -> 0001"
    assert upgrades_in(whole.stdout)[-1].endswith(f"-> {HEAD}")

    asked = run(["make", "sql", "RANGE=0004:0006"], environment(fresh_database()))
    assert asked.returncode == 0, asked.stderr
    assert upgrades_in(asked.stdout) == ["0004 -> 0005", "0005 -> 0006"]


def test_an_unreachable_database_prints_no_sql_and_says_how_to_get_it() -> None:
    down = URL.create(
        "postgresql+psycopg", username="u", password="s3cret", host="127.0.0.1", port=9
    )
    done = run(["make", "sql"], environment(down))
    assert done.returncode != 0
    assert "Running upgrade" not in done.stdout
    assert "RANGE=base:head prints the whole history with no database" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert str(EXIT_UNAVAILABLE) in done.stderr  # make names the tool's exit status


def test_a_span_alembic_cannot_walk_is_refused_in_one_line() -> None:
    for span, says in [
        ("9999:head", "Can't locate revision identified by '9999'"),
        ("0010:-1", "Relative revision -1 didn't produce 1 migrations"),
        ("0011:0010", "holds no upgrade: give the lower revision first"),
    ]:
        done = run(["make", "sql", f"RANGE={span}"], environment())
        assert done.returncode != 0, span
        assert f"make sql: RANGE={span}" in done.stderr, done.stderr
        assert says in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert "Running upgrade" not in done.stdout
