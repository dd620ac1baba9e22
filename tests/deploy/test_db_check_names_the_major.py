"""`make db-check` names the server's major, and warns when it is one the migrations have not
been proven on (`make test-matrix` runs them on each tested major)."""

import pytest

from media_db.deploy.check import major_of, untested_warning
from media_db.deploy.project import TESTED_MAJORS
from tests.conftest import FreshDatabase
from tests.helpers import environment, run
from tests.servers import DatabaseServer

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix


def test_db_check_prints_a_tested_major_without_warning(
    server: DatabaseServer, fresh_database: FreshDatabase
) -> None:
    result = run(["make", "db-check"], environment(fresh_database()))
    assert result.returncode == 0, result.stderr
    major = major_of(server.version())
    assert major in TESTED_MAJORS
    assert f"Server major: {major}\n" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("version", "warning"),
    [
        ("14.12 (Debian 14.12-1.pgdg120+1)", "PostgreSQL 14 is outside the tested majors"),
        ("19beta1", "PostgreSQL 19 is outside the tested majors (13, 15, 16, 17, 18)"),
        ("12.20", "refuse it (13 or newer is required)"),
    ],
)
def test_an_untested_major_is_warned_about(version: str, warning: str) -> None:
    assert warning in (untested_warning(version) or "")


@pytest.mark.parametrize("major", TESTED_MAJORS)
def test_a_tested_major_is_not(major: int) -> None:
    assert untested_warning(f"{major}.3 (Debian)") is None
