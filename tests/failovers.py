"""What the failover tests share: the two faults, waiting for a failover's end, a database of
the test's own on the formation, and the recovery times the tests write down.

A formation is shared by the tests that fail it over with `pg_autoctl perform failover`: the
command returns once the monitor has swapped the roles, and the formation settles back into a
primary and a secondary, ready for the next test (each test uses a database of its own). After
kill -9 of the primary's postmaster the monitor may still fail over once the keeper has
restarted it, seconds later: a test that follows could be cut by it, so each kill -9 test starts
a formation of its own (tests/conftest.py).

Recovery times are measured from the fault's start, on whatever load the machine has; they are
written down (`record`), never asserted: `make test-failover` prints them at its end, and
docs/topologies.md gives their medians.
"""

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import URL, create_engine, pool

from media_db import settings
from tests import topologies
from tests.helpers import alembic_config

DEADLINE_SECONDS = 300.0  # for any one condition, on a loaded 2-core machine
RECOVERY = "failover_recovery"  # the user property each measured time is recorded under

Fault = Callable[[topologies.Formation], None]


def failover(formation: topologies.Formation) -> None:
    """Returns once the monitor has promoted the secondary (pg_autoctl waits for it)."""
    formation.autoctl("perform", "failover", "--pgdata", str(formation.monitor))


def kill_the_primary(formation: topologies.Formation) -> None:
    pidfile = formation.node(formation.primary_port()) / "postmaster.pid"
    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


FAULTS = [failover, kill_the_primary]
FAULT_IDS = ["perform failover", "kill -9 of the primary"]


def over(formation: topologies.Formation) -> None:
    """Wait for the failover's end: the monitor settled, and a primary taking writes."""
    formation.wait_until_settled()
    writable(formation)


@contextmanager
def in_the_background(fault: Fault, formation: topologies.Formation) -> Iterator[float]:
    """`fault` started beside the block (perform failover returns only once the old primary
    follows the new one, seconds after the new one takes writes); yields when it started, and
    waits for its end after the block."""
    with ThreadPoolExecutor(1) as executor:
        started = time.monotonic()
        running = executor.submit(fault, formation)
        yield started
        running.result(timeout=DEADLINE_SECONDS)


def writable(formation: topologies.Formation) -> None:
    """Until a primary takes writes through the formation's URL."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            with psycopg.connect(formation.uri(), connect_timeout=5):
                return
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "no primary took writes after the failover"
            time.sleep(0.1)


def new_database(formation: topologies.Formation) -> URL:
    """An empty database of the test's own on the formation, as its multi-host URL reaches it."""
    name = f"media_failover_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(formation.uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return settings.database_url({"DATABASE_URL": formation.uri(name)})


def migrated_database(formation: topologies.Formation, revision: str = "head") -> URL:
    url = new_database(formation)
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(alembic_config(connection), revision)
    return url


def scalar(url: URL, sql: str) -> Any:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        return connection.exec_driver_sql(sql).scalar()


def record(request: pytest.FixtureRequest, what: str, seconds: float) -> None:
    """Write down a time measured from the fault's start (shown at the run's end)."""
    node: Any = request.node
    node.user_properties.append((RECOVERY, f"{what}: {seconds:.1f} s"))


def resumed(fault_started: float, successes: list[float]) -> float:
    """Seconds from the fault's start to the first success after the longest stretch without
    one that followed it (the outage as the process saw it)."""
    after = [fault_started, *sorted(t for t in successes if t > fault_started)]
    assert len(after) > 1, "nothing succeeded after the fault"
    _, first_again = max(pairwise(after), key=lambda gap: gap[1] - gap[0])
    return first_again - fault_started
