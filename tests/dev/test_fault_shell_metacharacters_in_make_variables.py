"""Fault: shell (and make) syntax in a make variable. Make hands user values to commands as
environment variables, so nothing in them is ever run, whichever variable carries it (one a
target reads, or any other given on the command line); REV and RANGE must look like revisions
and are refused in one line otherwise, changing nothing. A variable no goal reads, one in lower
case, or one of the Makefile's own names, is refused before anything runs."""

import re
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, pool

from media_db.deploy.project import current_heads
from tests.faults import assert_recovers, seed_rows
from tests.helpers import HEAD, REPO_ROOT, environment, run

MAKEFILE = (REPO_ROOT / "Makefile").read_text()
# Its value may go on over lines ending in a backslash.
USER_VALUES = (
    re.search(r"^USER_VALUES := ((?:.*\\\n)*.*)$", MAKEFILE, re.M)[1]  # type: ignore[index]
    .replace("\\\n", " ")
    .split()
)
# target -> the values it reads, in the Makefile's order
TAKES = {
    target: names.split() for target, names in re.findall(r"^TAKES\.(\S+) := (.*)$", MAKEFILE, re.M)
}


def payloads(marker: Path) -> list[str]:
    return [
        f"base'; touch {marker}; echo '",
        f'base"; touch {marker}; echo "',
        f"base`touch {marker}`",
        f"$(touch {marker})",
        f"$(shell touch {marker})",
        f"${{shell touch {marker}}}",
        f"base\ntouch {marker}",
    ]


@pytest.mark.parametrize(
    ("target", "variable", "refusal"),
    [
        ("downgrade", "REV", "is not a revision"),
        ("sql", "RANGE", "is not a revision"),
        ("revision", "M", "no difference between the models and the database"),
        ("retry", "ID", "is not a job id"),
        ("jobs", "STATUS", "is not a job status"),
    ],
)
def test_nothing_in_a_make_variable_is_run(
    tmp_path: Path, migrated: URL, target: str, variable: str, refusal: str
) -> None:
    rows = seed_rows(migrated)
    marker = tmp_path / "injected"
    for payload in payloads(marker):
        result = run(["make", target, f"{variable}={payload}"], environment(migrated))
        output = result.stdout + result.stderr
        assert not marker.exists(), f"{variable}={payload!r} ran a command"
        assert result.returncode != 0, output
        assert refusal in output
        assert "Traceback" not in output
    assert_recovers(migrated, rows)


def test_good_revisions_still_pass(migrated: URL) -> None:
    rows = seed_rows(migrated)
    # Consent: the way down drops columns of 0010 that every job row holds (its retry state).
    env = environment(migrated, ALLOW_DATA_LOSS="1", MIGRATION_BACKUP="skip")
    assert run(["make", "downgrade", "REV=0006"], env).returncode == 0
    assert run(["make", "downgrade", "REV=-1"], env).returncode == 0
    assert "-- Running upgrade 0005 -> 0006" in run(["make", "sql", "RANGE=0005:0006"], env).stdout
    assert_recovers(migrated, rows)


def reader(name: str) -> str:
    """The first target that reads `name` (help, which reads none, for one every target reads)."""
    return next((target for target, names in TAKES.items() if name in names), "help")


def test_every_value_a_recipe_reads_is_a_user_value() -> None:
    """Overridable defaults (`?=`) and the environment variables recipes read ($$NAME, $${NAME)
    are all passed as environment variables, unexpanded."""
    defaults = set(re.findall(r"^([A-Z_]+) \?=", MAKEFILE, re.M))
    recipes = "\n".join(line for line in MAKEFILE.splitlines() if line.startswith("\t"))
    read = set(re.findall(r"\$\$\{?([A-Z_]+)", recipes))
    assert defaults | read <= set(USER_VALUES)
    assert set(USER_VALUES) - {"PYTHON"} == {name for names in TAKES.values() for name in names}


@pytest.mark.parametrize(
    ("target", "variable"),
    [(reader(name), name) for name in USER_VALUES]
    + [("help", "NOT_READ_BY_ANY_TARGET"), ("downgrade", "ALLOW_DATA_LOSS")],
)
def test_no_make_function_in_any_variable_is_run(
    tmp_path: Path, migrated: URL, target: str, variable: str
) -> None:
    marker = tmp_path / "injected"
    for payload in (f"$(shell touch {marker})", f"${{shell touch {marker}}}"):
        result = run(["make", target, f"{variable}={payload}"], environment(migrated))
        output = result.stdout + result.stderr
        assert not marker.exists(), f"make {target} {variable}={payload!r} ran a command"
        assert "Traceback" not in output, output


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (["downgrade", "rev=0005"], "rev=... is not read: the variable is REV (upper case)"),
        (["sql", "range=0001:head"], "range=... is not read: the variable is RANGE"),
        (["revision", "m=add a column"], "m=... is not read: the variable is M"),
        (["upgrade", "REV=0010"], "make upgrade takes no REV: REV is for make downgrade"),
        (["status", "BACKUP=x"], "make status takes no BACKUP: BACKUP is for make restore"),
        # The Makefile's own names: REVISION is the pattern REV is checked against.
        (["downgrade", "REVISION=0005"], "REVISION=... is this Makefile's own, not a setting"),
        (["upgrade", "WITH_DB=true"], "WITH_DB=... is this Makefile's own, not a setting"),
        (["upgrade", "foo=1"], "foo=... is not read by make upgrade: settings are upper case"),
    ],
)
def test_a_variable_no_goal_reads_is_refused_before_anything_runs(
    migrated: URL, args: list[str], refusal: str
) -> None:
    result = run(["make", *args], environment(migrated))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert refusal in line
    with create_engine(migrated, poolclass=pool.NullPool).connect() as connection:
        assert current_heads(connection) == (HEAD,)
