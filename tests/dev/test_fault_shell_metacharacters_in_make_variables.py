"""Fault: shell (and make) syntax in REV, RANGE or M. Make hands user values to commands as
environment variables, so nothing in them is ever run; REV and RANGE must look like revisions
and are refused in one line otherwise, changing nothing."""

from pathlib import Path

import pytest
from sqlalchemy import URL

from tests.faults import assert_recovers, seed_rows
from tests.helpers import environment, run


def payloads(marker: Path) -> list[str]:
    return [
        f"base'; touch {marker}; echo '",
        f'base"; touch {marker}; echo "',
        f"base`touch {marker}`",
        f"$(touch {marker})",
        f"$(shell touch {marker})",
        f"base\ntouch {marker}",
    ]


@pytest.mark.parametrize(
    ("target", "variable", "refusal"),
    [
        ("downgrade", "REV", "is not a revision"),
        ("sql", "RANGE", "is not a revision"),
        ("revision", "M", "no difference between the models and the database"),
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
    env = environment(migrated)
    assert run(["make", "downgrade", "REV=0006"], env).returncode == 0
    assert run(["make", "downgrade", "REV=-1"], env).returncode == 0
    assert "-- Running upgrade 0005 -> 0006" in run(["make", "sql", "RANGE=0005:0006"], env).stdout
    assert_recovers(migrated, rows)
