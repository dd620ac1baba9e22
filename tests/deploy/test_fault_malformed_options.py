"""Fault: every deploy option given a value of the wrong type, out of range, unbounded or
misspelt, and consent given in a form that is not the documented one. Each is refused before
anything runs, in one line naming the option and a good value, and the database is unchanged."""

from sqlalchemy import URL, create_engine, pool

from media_db.deploy.options import OPTIONS
from media_db.deploy.project import VERSION_TABLE
from tests.faults import assert_recovers, failure_line, scalar, seed_rows
from tests.helpers import HEAD, REPO_ROOT, environment, run

BAD_X = {
    "lock-retries=-1": "-x lock-retries=3",
    "lock-retries=nan": "-x lock-retries=3",
    "lock-retries=inf": "-x lock-retries=3",
    "lock-retries=1000": "-x lock-retries=3",
    "lock-wait=nan": "-x lock-wait=10min",
    "lock-wait=-5": "-x lock-wait=10min",
    "lock-wait=600": "-x lock-wait=10min",  # a bare number: which unit?
    "lock-retry-backoff=-1": "-x lock-retry-backoff=2s",
    "lock-timeout=5": "-x lock-timeout=5s",  # a bare number: once 5 ms here, seconds elsewhere
    "lock_timeout=0": "-x lock-timeout=5s",  # the underscored alias, checked alike
    "lock-timeout=99999999999999h": "-x lock-timeout=5s",
    "lock-timeout=5 s": "-x lock-timeout=5s",
    "lock-timeout=\u0665s": "-x lock-timeout=5s",  # an Arabic-Indic 5: ASCII digits only
    "lock-retries=\uff13": "-x lock-retries=3",  # a fullwidth 3
    "statement-timeout=0": "-x statement-timeout=15min",
    "allow-data-loss=TRUE": "-x allow-data-loss=true",
    "allow-data-loss=yes": "-x allow-data-loss=true",
    "debug=1": "-x debug=true",
    "lock-timout=5s": "-x lock-timeout=5s",  # misspelt: would be silently ignored
}
BAD_ENVIRONMENT = {
    "ALLOW_DATA_LOSS": ("true", "ALLOW_DATA_LOSS=1"),
    "MIGRATION_LOCK_WAIT": ("nan", "MIGRATION_LOCK_WAIT=10min"),
    "MIGRATION_LOCK_RETRIES": ("-1", "MIGRATION_LOCK_RETRIES=3"),
    "MIGRATION_LOCK_TIMEOUT": ("0", "MIGRATION_LOCK_TIMEOUT=5s"),
}


def revision(url: URL) -> object:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return scalar(connection, f"SELECT version_num FROM {VERSION_TABLE}")


def test_each_bad_option_is_refused_and_runs_nothing(migrated: URL) -> None:
    rows = seed_rows(migrated)
    for option, example in BAD_X.items():
        result = run(["alembic", "-x", option, "downgrade", "base"], environment(migrated))
        line = failure_line(result)
        assert option.split("=")[0] in line, line
        assert example in line, line
    offline = run(["alembic", "-x", "lock_timeout=0", "upgrade", "head", "--sql"], environment())
    assert "-x lock_timeout='0' refused" in failure_line(offline)
    for variable, (value, example) in BAD_ENVIRONMENT.items():
        result = run(["alembic", "downgrade", "base"], environment(migrated, **{variable: value}))
        line = failure_line(result)
        assert f"{variable}={value!r} refused" in line
        assert example in line
    twice = run(
        ["alembic", "-x", "lock_timeout=1s", "-x", "lock-timeout=2s", "downgrade", "base"],
        environment(migrated),
    )
    assert "-x lock-timeout given twice (as lock-timeout and lock_timeout)" in failure_line(twice)
    assert revision(migrated) == HEAD
    assert_recovers(migrated, rows)


def test_make_refuses_a_consent_it_does_not_know(migrated: URL) -> None:
    rows = seed_rows(migrated)
    result = run(["make", "downgrade", "REV=base"], environment(migrated, ALLOW_DATA_LOSS="yes"))
    assert result.returncode != 0
    assert "ALLOW_DATA_LOSS='yes' refused: it must be exactly 1 (consent) or 0" in result.stdout
    assert_recovers(migrated, rows)


def test_the_readme_documents_every_option_by_its_names() -> None:
    deploy = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for option in OPTIONS.values():
        assert f"| `{option.name}`" in deploy, option.name
        assert f"| `{option.environment}` |" in deploy, option.environment
        if option.alias:
            assert f"(or `{option.alias}`)" in deploy, option.alias
