"""Fixtures: a real PostgreSQL (see tests/servers.py), fresh databases on it, Alembic configs."""

import compileall
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, make_url, pool

from media_db.dev.embedded import LocalServer
from tests import failovers, topologies
from tests.helpers import REPO_ROOT, close_started
from tests.helpers import alembic_config as make_alembic_config
from tests.servers import DatabaseServer, NoTestServer, start_server

pytest_plugins = ("tests.cpu_report",)

FreshDatabase = Callable[[], URL]


SERVER = pytest.StashKey[DatabaseServer | NoTestServer]()
EXIT_STACK = pytest.StashKey[contextlib.ExitStack]()
# The main pytest process starts the one server of the run; pytest-xdist workers, spawned
# after it, find it here (backend|admin URL) and share it, each test on databases of its own.
SHARED_SERVER = "MEDIA_DB_TESTS_SERVER"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Servers started under tmp_path run as a system user who must traverse to their data; any
    # pytest session starting on this machine (another checkout's, a nested run) resets
    # /tmp/pytest-of-root to 0700, so this run keeps its temporary folders apart (xdist's
    # workers get subfolders of it). Before the tmpdir plugin reads the option.
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="media-db-pytest-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


def pytest_sessionstart(session: pytest.Session) -> None:
    # Started here rather than in a fixture so the report header can name it.
    config = session.config
    if not hasattr(config, "workerinput"):
        compile_checkout()
    if hasattr(config, "workerinput") and SHARED_SERVER in os.environ:
        backend, url = os.environ[SHARED_SERVER].split("|", 1)
        config.stash[SERVER] = DatabaseServer(backend, make_url(url))
        return
    stack = config.stash[EXIT_STACK] = contextlib.ExitStack()
    workdir = Path(tempfile.mkdtemp(prefix="media-db-tests-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    # Backups that consented drops write (deploy/backup.py) go with the run, not the checkout;
    # the workers inherit it.
    os.environ.setdefault("MIGRATION_BACKUP_DIR", str(workdir / "backups"))
    try:
        chosen = config.stash[SERVER] = stack.enter_context(start_server(workdir))
    except NoTestServer as error:
        config.stash[SERVER] = error
        return
    admin_url = chosen.admin_url.render_as_string(hide_password=False)
    os.environ[SHARED_SERVER] = f"{chosen.backend}|{admin_url}"
    stack.callback(os.environ.pop, SHARED_SERVER, None)


def compile_checkout() -> None:
    """Our own modules' bytecode, written once: the suite starts hundreds of Python processes
    (alembic, make, hooks), and where PYTHONDONTWRITEBYTECODE is set each would compile them
    from source. Project copies (tests/helpers.py) take it along; `make install` compiles the
    installed packages."""
    for name in ("media_db", "models", "alembic", "tests", "bench"):
        compileall.compile_dir(REPO_ROOT / name, quiet=1, workers=0)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if EXIT_STACK in session.config.stash:
        session.config.stash[EXIT_STACK].close()


def pytest_report_header(config: pytest.Config) -> str:
    chosen = config.stash.get(SERVER, None)
    if isinstance(chosen, DatabaseServer):
        return f"database backend: {chosen.backend}, PostgreSQL {chosen.version()}"
    return f"database backend: NONE ({chosen})"


@pytest.fixture(autouse=True)
def no_pipe_left_open() -> Iterator[None]:
    """What the test started in the background is ended and its pipes closed, even when the
    test failed or killed it half-way."""
    yield
    close_started()


@pytest.fixture(scope="session")
def server(pytestconfig: pytest.Config) -> DatabaseServer:
    chosen = pytestconfig.stash[SERVER]
    if isinstance(chosen, NoTestServer):
        pytest.fail(str(chosen), pytrace=False)
    return chosen


@pytest.fixture
def fresh_database(server: DatabaseServer) -> Iterator[FreshDatabase]:
    """Factory of empty databases, each dropped when the test ends."""
    made: list[URL] = []

    def make() -> URL:
        made.append(server.create_database())
        return made[-1]

    yield make
    for url in made:
        server.drop_database(url)


@pytest.fixture
def engine(fresh_database: FreshDatabase) -> Iterator[Engine]:
    """An engine on one empty database of its own."""
    engine = create_engine(fresh_database(), poolclass=pool.NullPool)
    yield engine
    engine.dispose()


# pytest-alembic's two hooks: our alembic.ini, and a fresh database per test.
@pytest.fixture
def alembic_config() -> Config:
    return make_alembic_config()


@pytest.fixture
def alembic_engine(engine: Engine) -> Engine:
    return engine


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server that really checks passwords (scram-sha-256 on TCP), whatever the backend:
    the machine's service may trust every local connection, which would prove nothing."""
    server = LocalServer(
        home=tmp_path_factory.mktemp("scram") / "postgres",
        superuser_password=secrets.token_urlsafe(16),
    )
    server.ensure_running()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def head_template(server: DatabaseServer) -> Iterator[str]:
    """A database migrated to head once per worker, that `head_copy` copies (CREATE DATABASE ...
    TEMPLATE: a few milliseconds, where replaying every revision takes seconds). Nobody
    connects to it after the upgrade, as a template requires."""
    url = server.create_database()
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        command.upgrade(make_alembic_config(connection), "head")
    yield str(url.database)
    server.drop_database(url)


@pytest.fixture
def head_copy(server: DatabaseServer, head_template: str) -> Iterator[FreshDatabase]:
    """Factory of fresh databases at head (copies of head_template), each dropped when the test
    ends. A test whose subject is the upgrade itself builds its own with `fresh_database`."""
    made: list[URL] = []

    def make() -> URL:
        made.append(server.create_database(template=head_template))
        return made[-1]

    yield make
    for url in made:
        server.drop_database(url)


@pytest.fixture
def migrated(head_copy: FreshDatabase) -> URL:
    """A fresh database at head."""
    return head_copy()


@pytest.fixture(scope="session")
def debian_primary() -> Iterator[topologies.Cluster]:
    """A primary of Debian's PostgreSQL of our own, for PgBouncer to front."""
    try:
        with topologies.primary() as cluster:
            yield cluster
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


def _pooler(primary: topologies.Cluster, mode: str) -> Iterator[topologies.Cluster]:
    try:
        with topologies.pgbouncer(primary, mode) as bouncer:
            yield bouncer
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def transaction_pooler(debian_primary: topologies.Cluster) -> Iterator[topologies.Cluster]:
    """Debian's PgBouncer, pool_mode = transaction, in front of debian_primary."""
    yield from _pooler(debian_primary, "transaction")


@pytest.fixture(scope="session")
def session_pooler(debian_primary: topologies.Cluster) -> Iterator[topologies.Cluster]:
    """Debian's PgBouncer, pool_mode = session, in front of debian_primary."""
    yield from _pooler(debian_primary, "session")


@pytest.fixture
def primary_database(debian_primary: topologies.Cluster) -> Iterator[str]:
    """The name of an empty database on debian_primary, dropped when the test ends."""
    primary = DatabaseServer("debian", debian_primary.url())
    url = primary.create_database()
    yield str(url.database)
    primary.drop_database(url)


@pytest.fixture
def restartable() -> Iterator[LocalServer]:
    """An embedded server of the test's own, which it may stop, restart and start again (on the
    same port: `ensure_running(port)`). It asks for a password, so a test can check that none
    leaks."""
    # Not under pytest's tmp_path: a pytest starting elsewhere resets /tmp/pytest-of-<user> to
    # 0700, and the server's system user must keep reaching its folder for stop and restart.
    home = Path(tempfile.mkdtemp(prefix="media-db-restart-"))
    server = LocalServer(home=home / "postgres", superuser_password=secrets.token_hex(8))
    server.ensure_running()
    yield server
    server.destroy()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_formation() -> Iterator[topologies.Formation]:
    """A pg_auto_failover formation for the tests that fail it over with `perform failover`
    (tests/failovers.py says why only those share one)."""
    try:
        with topologies.formation() as made:
            yield made
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(params=failovers.FAULTS, ids=failovers.FAULT_IDS)
def fault(request: pytest.FixtureRequest) -> failovers.Fault:
    fault: failovers.Fault = request.param
    return fault


@pytest.fixture
def formation(
    fault: failovers.Fault, request: pytest.FixtureRequest
) -> Iterator[topologies.Formation]:
    """A settled formation, a primary taking writes, for `fault`: the shared one for perform
    failover, one of the test's own for kill -9."""
    if fault is failovers.failover:
        shared: topologies.Formation = request.getfixturevalue("shared_formation")
        failovers.over(shared)
        yield shared
        return
    try:
        with topologies.formation() as made:
            yield made
    except topologies.MissingComponent as error:
        pytest.fail(str(error), pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The failover tests' recovery times (tests/failovers.py), one line each."""
    measured = [
        f"{report.nodeid.split('::')[-1]}: {value}"
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == failovers.RECOVERY
    ]
    if measured:
        terminalreporter.section("failover recovery, from the fault's start")
        for line in sorted(measured):
            terminalreporter.write_line(line)
