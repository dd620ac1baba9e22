"""The embedded server keeps its port across a stop and start after connections it closed
itself: those left in TIME_WAIT on its port do not move it (every DATABASE_URL an app took from
`make db-url` stays good)."""

import socket

import pytest

from media_db.dev.embedded import LocalServer

# A startup packet of an unknown protocol version: the server answers with an error and closes
# the connection first, which leaves the server's end in TIME_WAIT (as a stop with clients
# connected does).
UNKNOWN_PROTOCOL = b"\x00\x00\x00\x08\x12\x34\x56\x78"


def test_connections_the_server_closed_do_not_move_its_port(
    restartable: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = restartable.running_port()
    assert port is not None
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(UNKNOWN_PROTOCOL)
        while client.recv(1024):  # until the server has closed its end
            pass
    restartable.stop()
    # What a probe binding without SO_REUSEADDR saw: the port looks taken.
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))

    restartable.ensure_running()

    assert restartable.running_port() == port
    assert "moves" not in capsys.readouterr().err
