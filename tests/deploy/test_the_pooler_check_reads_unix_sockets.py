"""Over a Unix socket, the intermediary check (media_db/intermediary.py) finds the server when
the socket is the postmaster's, in this PID namespace or in one of its own (a container whose
socket folder is mounted here), and names the process when a pooler listens on it instead."""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from media_db import intermediary
from tests import topologies


def seen_over_unix_socket(cluster: topologies.Cluster) -> str | None:
    """What the check finds between us and the server behind `cluster`'s Unix socket."""
    with psycopg.connect(
        host=str(cluster.data.parent), port=cluster.port, user="postgres", dbname="postgres"
    ) as connection:
        assert Path(connection.info.host).is_dir()  # a Unix socket, not TCP
        seen = connection.execute(intermediary.BACKEND_END).fetchone()
        assert seen is not None
        return intermediary.between(connection.pgconn.socket, seen)


@pytest.fixture
def namespaced_primary() -> Iterator[topologies.Cluster]:
    try:
        with topologies.primary_in_pid_namespace() as cluster:
            yield cluster
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


def test_the_postmasters_own_socket_is_the_server(debian_primary: topologies.Cluster) -> None:
    assert seen_over_unix_socket(debian_primary) is None


def test_a_server_in_its_own_pid_namespace_is_the_server(
    namespaced_primary: topologies.Cluster,
) -> None:
    # The premise: the postmaster's pid in there (its postmaster.pid) is not a postgres here.
    pid_in_there = (namespaced_primary.data / "postmaster.pid").read_text().split()[0]
    here = Path("/proc") / pid_in_there / "cmdline"
    assert not here.exists() or b"postgres" not in here.read_bytes()
    assert seen_over_unix_socket(namespaced_primary) is None


def test_a_pooler_listening_on_a_unix_socket_is_named(
    debian_primary: topologies.Cluster,
) -> None:
    with topologies.pgbouncer(debian_primary, "transaction", unix_socket=True) as bouncer:
        found = seen_over_unix_socket(bouncer)
    assert found is not None
    assert "is not the postmaster of the backend that answered" in found
