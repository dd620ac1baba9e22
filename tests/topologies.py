"""Production set-ups, started by the tests themselves from Debian's packages: a primary with a
streaming standby (`pg_basebackup -R`), and PgBouncer in front of the primary.

Debian's PostgreSQL (the machine's `postgresql-<major>`) provides initdb, pg_ctl and
pg_basebackup; PgBouncer comes from Debian's `pgbouncer` (scripts/test-components.sh installs it
when missing). As root both run as the `postgres` user Debian's packages create. Everything lives
in a temporary folder and is stopped when the context ends, on failure too.
"""

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL

from tests.helpers import REPO_ROOT

SYSTEM_USER = "postgres"
START_SECONDS = 60


class MissingComponent(RuntimeError):
    pass


def debian_bin() -> Path:
    """The newest Debian PostgreSQL whose server and pg_basebackup are installed."""
    found = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "initdb").exists()),
        key=lambda path: int(path.parent.name),
    )
    if not found:
        raise MissingComponent(
            "no Debian PostgreSQL server in /usr/lib/postgresql: the replication tests need "
            "one (apt-get install postgresql-15)"
        )
    return found[-1]


def installed(tool: str, package: str) -> str:
    """Debian's `tool`, installed on first use by scripts/test-components.sh (one installer at
    a time across workers), or MissingComponent saying what to install."""
    with open(tempfile.gettempdir() + "/media-db-test-components.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if found := shutil.which(tool):
            return found
        result = subprocess.run(
            [str(REPO_ROOT / "scripts" / "test-components.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not (found := shutil.which(tool)):
            raise MissingComponent(
                f"{tool} is not installed and scripts/test-components.sh could not install "
                f"it: {result.stderr.strip()[-500:]} (install {package})"
            )
        return found


def pgbouncer_binary() -> str:
    return installed("pgbouncer", "Debian's pgbouncer, 1.18 or later")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_system_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--", *args] if os.geteuid() == 0 else args


def _owned(path: Path) -> Path:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _run(args: list[str]) -> str:
    result = subprocess.run(
        _as_system_user(args),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


@dataclass(frozen=True)
class Cluster:
    data: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def start(self) -> None:
        _owned(self.log.parent)
        _run(
            [
                str(debian_bin() / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(START_SECONDS),
                "-o",
                f"-p {self.port} -k {self.data.parent}",
                "start",
            ]
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run([str(debian_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])


@dataclass(frozen=True)
class Replicated:
    primary: Cluster
    standby: Cluster


def _folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return _owned(folder)


@contextlib.contextmanager
def _cluster(name: str, make: Callable[[Cluster], None]) -> Iterator[Cluster]:
    """A cluster in a folder of its own: made by `make`, started, then stopped and removed."""
    folder = _folder(f"media-db-{name}-")
    cluster = Cluster(folder / name, free_port())
    try:
        make(cluster)
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _initdb(cluster: Cluster) -> None:
    """A primary's data folder: takes streaming standbys (wal_level replica, trust on
    127.0.0.1)."""
    _run(
        [
            str(debian_bin() / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
    )
    with (cluster.data / "postgresql.conf").open("a") as conf:
        # fsync off: a throwaway cluster; the tests measure replay, not durability.
        conf.write(
            "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 4\n"
            "hot_standby = on\nfsync = off\nmax_connections = 100\n"
        )


def primary() -> contextlib.AbstractContextManager[Cluster]:
    """A primary that takes streaming standbys, its Unix socket in its folder."""
    return _cluster("primary", _initdb)


@contextlib.contextmanager
def primary_in_pid_namespace() -> Iterator[Cluster]:
    """A primary whose postmaster runs in a PID namespace of its own, as in a container whose
    socket folder is mounted here: its backends' pg_backend_pid() are not their pids here."""
    folder = _folder("media-db-pidns-")
    cluster = Cluster(folder / "primary", free_port())
    # --kill-child: the namespace (and the server) ends with the unshare process.
    unshare = ["unshare", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-current-user"]
    process: subprocess.Popen[bytes] | None = None
    try:
        _initdb(cluster)
        postgres = [str(debian_bin() / "postgres"), "-D", str(cluster.data)]
        listen = ["-p", str(cluster.port), "-k", str(folder)]
        with cluster.log.open("wb") as log:
            process = subprocess.Popen(
                [*unshare, *_as_system_user([*postgres, *listen])],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_SECONDS
        while not _ready(folder, cluster.port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start: {cluster.log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield cluster
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _ready(socket_folder: Path, port: int) -> bool:
    ready = subprocess.run(
        [str(debian_bin() / "pg_isready"), "-q", "-h", str(socket_folder), "-p", str(port)],
        check=False,
    )
    return ready.returncode == 0


def standby_of(source: Cluster) -> contextlib.AbstractContextManager[Cluster]:
    """A hot standby streaming from `source`, made with `pg_basebackup -R`."""

    def base_backup(cluster: Cluster) -> None:
        _run(
            [
                str(debian_bin() / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(source.port),
                "-U",
                "postgres",
                "-D",
                str(cluster.data),
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-d",
                "application_name=standby1",
            ]
        )

    return _cluster("standby", base_backup)


@contextlib.contextmanager
def pgbouncer(
    upstream: Cluster, pool_mode: str, pool_size: int = 20, unix_socket: bool = False
) -> Iterator[Cluster]:
    """Debian's PgBouncer in `pool_mode` in front of `upstream`, every database name passed on
    (`* =`). Yields a Cluster-like endpoint (only its port and url() are meaningful). With
    `unix_socket`, it listens in the folder holding its `data`, as a cluster does, and reaches
    `upstream` over its Unix socket: Unix sockets end to end."""
    binary = pgbouncer_binary()
    folder = _folder("media-db-pgbouncer-")
    port = free_port()
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = host={upstream.data.parent if unix_socket else '127.0.0.1'} "
        f"port={upstream.port}\n\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"unix_socket_dir = {folder if unix_socket else ''}\n"
        f"auth_type = trust\nauth_file = {folder / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    for path in folder.iterdir():
        _owned(path)
    # pgbouncer refuses to run as root; -u makes it switch to the system user.
    user = ["-u", SYSTEM_USER] if os.geteuid() == 0 else []
    # Its own log file says why it failed; nothing to read from its pipes.
    process = subprocess.Popen(
        [binary, *user, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (
                    (folder / "pgbouncer.log").read_text()
                    if (folder / "pgbouncer.log").exists()
                    else ""
                )
                raise RuntimeError(f"pgbouncer did not start: {log[-2000:]}")
            time.sleep(0.05)
        yield Cluster(folder / "pgbouncer", port)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Formation:
    """A pg_auto_failover formation: a monitor and two nodes in one folder, each run by its own
    `pg_autoctl ... --run` (the nodes' keepers restart their PostgreSQL and follow the monitor's
    orders, as in production)."""

    folder: Path
    monitor_port: int
    node_ports: tuple[int, int]

    def autoctl(self, *args: str) -> str:
        return _run(_autoctl(self.folder, *args))

    def uri(self, database: str = "postgres") -> str:
        """The multi-host URL the formation hands out (`pg_autoctl show uri`), for `database`:
        `postgres://postgres@h1:p1,h2:p2/db?target_session_attrs=read-write&sslmode=prefer`."""
        shown = self.autoctl("show", "uri", "--pgdata", str(self.monitor), "--formation", "default")
        # As an application takes it: with its user (the nodes trust local connections).
        uri = shown.strip().replace("://", f"://{SYSTEM_USER}@", 1)
        return uri.replace("/postgres?", f"/{database}?", 1)

    @property
    def monitor(self) -> Path:
        return self.folder / "monitor"

    def node(self, port: int) -> Path:
        return self.folder / f"node_{port}"

    def states(self) -> dict[int, tuple[str, str]]:
        """{node port: (reported state, assigned state)}, as the monitor has them."""
        shown = json.loads(self.autoctl("show", "state", "--pgdata", str(self.monitor), "--json"))
        return {
            int(node["nodeport"]): (node["current_group_state"], node["assigned_group_state"])
            for node in shown
        }

    def primary_port(self) -> int:
        [port] = [p for p, (reported, _) in self.states().items() if reported == "primary"]
        return port

    def settled(self) -> bool:
        """A primary and a secondary, each where the monitor wants it."""
        states = self.states()
        wanted = {("primary", "primary"), ("secondary", "secondary")}
        return len(states) == 2 and set(states.values()) == wanted

    def wait_until_settled(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not self.settled():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the formation did not settle: {self.states()}")
            time.sleep(0.2)


def _autoctl(folder: Path, *args: str) -> list[str]:
    # Its configuration and state live under XDG folders of the formation's own; it finds
    # pg_ctl on PATH.
    environment = [
        f"XDG_CONFIG_HOME={folder / 'config'}",
        f"XDG_DATA_HOME={folder / 'data'}",
        f"PATH={debian_bin()}:/usr/bin:/bin",
    ]
    return ["env", *environment, "pg_autoctl", *args]


@contextlib.contextmanager
def formation() -> Iterator[Formation]:
    """A monitor and two nodes of pg_auto_failover (Debian's postgresql-<major>-auto-failover,
    scripts/test-components.sh), settled as a primary and a secondary; stopped and removed
    when the context ends."""
    if shutil.which("pg_autoctl") is None:
        raise MissingComponent(
            "pg_autoctl is not installed: the failover tests need pg_auto_failover "
            "(scripts/test-components.sh installs postgresql-<major>-auto-failover)"
        )
    folder = _folder("media-db-failover-")
    made = Formation(folder, free_port(), (free_port(), free_port()))
    common = ["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--run"]
    monitor = f"postgres://autoctl_node@127.0.0.1:{made.monitor_port}/pg_auto_failover"
    processes: list[subprocess.Popen[bytes]] = []

    def start(what: list[str], log: str) -> None:
        with (folder / log).open("wb") as output:
            command = _as_system_user(_autoctl(folder, "create", *what, *common))
            processes.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))

    try:
        for name in ("config", "data"):
            (folder / name).mkdir()
            _owned(folder / name)
        monitor_at = ["--pgdata", str(made.monitor), "--pgport", str(made.monitor_port)]
        start(["monitor", *monitor_at], "m.log")
        _wait_for_port(made.monitor_port, processes[-1], folder / "m.log")
        for port in made.node_ports:
            pgdata = ["--pgdata", str(made.node(port)), "--pgport", str(port)]
            start(["postgres", *pgdata, "--monitor", monitor], f"{port}.log")
            _wait_for_port(port, processes[-1], folder / f"{port}.log")
        made.wait_until_settled()
        yield made
    finally:
        for process in reversed(processes):
            process.terminate()  # pg_autoctl stops its PostgreSQL on SIGTERM
        for process in processes:
            try:
                process.wait(timeout=START_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not _accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"pg_autoctl did not start on {port}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
