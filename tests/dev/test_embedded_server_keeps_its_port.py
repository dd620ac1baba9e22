"""The embedded server keeps its port across a stop and start while clients were connected: the
connections of its last run, left in TIME_WAIT by the stop, do not move it (every DATABASE_URL an
app took from `make db-url` stays good)."""

import socket

import psycopg
import pytest

from media_db.dev.embedded import LocalServer
from media_db.pool import conninfo


def test_a_stop_with_clients_connected_keeps_the_port(
    restartable: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = restartable.running_port()
    assert port is not None
    clients = [psycopg.connect(conninfo(restartable.url("postgres"))) for _ in range(3)]
    restartable.stop()  # the server closes the sessions first: its end waits in TIME_WAIT
    for client in clients:
        client.close()
    # What a probe binding without SO_REUSEADDR saw: the port looks taken.
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))

    restartable.ensure_running()

    assert restartable.running_port() == port
    assert "moves" not in capsys.readouterr().err
