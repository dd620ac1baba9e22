"""Behind Debian's PgBouncer: migrations refuse a transaction pooler, having changed nothing,
and run over DIRECT_DATABASE_URL (or through a session pooler), in parallel too."""

import subprocess
import threading

import psycopg
import pytest
from alembic.util import CommandError
from sqlalchemy import create_engine, pool, text

from media_db.deploy import history, pooler, project
from media_db.pool import conninfo
from tests.helpers import BIN, DATABASE_VARIABLES, HEAD, REPO_ROOT, environment, run
from tests.topologies import Cluster

ALEMBIC = [str(BIN / "alembic")]
# What `downgrade base` keeps: the version table (empty) and the migration history.
AFTER_BASE = len((project.VERSION_TABLE, history.TABLE.name))


def _revision_and_locks(primary: Cluster, database: str) -> tuple[str | None, int, int]:
    engine = create_engine(primary.url(database), poolclass=pool.NullPool)
    with engine.connect() as connection:
        tables = connection.scalar(
            text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        )
        version = None
        if connection.scalar(text("SELECT to_regclass('media_analysis_alembic_version')")):
            version = connection.scalar(
                text("SELECT version_num FROM media_analysis_alembic_version")
            )
        locks = connection.scalar(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
    engine.dispose()
    return version, int(tables or 0), int(locks or 0)


def test_upgrade_through_a_transaction_pooler_refuses_in_one_line_and_changes_nothing(
    debian_primary: Cluster, transaction_pooler: Cluster, primary_database: str
) -> None:
    result = run(
        [*ALEMBIC, "upgrade", "head"], environment(transaction_pooler.url(primary_database))
    )

    assert result.returncode != 0
    output = result.stdout + result.stderr
    failed = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, output
    assert "transaction pooler" in failed[0]
    assert "DIRECT_DATABASE_URL" in failed[0]
    assert "Traceback" not in output
    assert _revision_and_locks(debian_primary, primary_database) == (None, 0, 0)
    # No SET of ours stayed on a pooled server connection for the next client (n8n).
    leaked = create_engine(transaction_pooler.url(primary_database), poolclass=pool.NullPool)
    with leaked.connect() as connection:
        assert connection.scalar(text("SHOW lock_timeout")) == "0"
    leaked.dispose()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_pooler_under_n8n_traffic_is_refused_every_time_unless_declared(
    mode: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    primary_database: str,
) -> None:
    """Whichever server backend the pooler hands out while six other clients run short
    transactions on the same database, the check sees the pooler in between: 0 of 100 get
    through (a check that guessed from the backends let 2 of 32 through)."""
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    pooled = request.getfixturevalue(f"{mode}_pooler").url(primary_database)
    halt = threading.Event()

    def n8n() -> None:
        with psycopg.connect(
            conninfo(pooled), autocommit=True, prepare_threshold=None
        ) as connection:
            while not halt.is_set():
                connection.execute("SELECT 1")

    clients = [threading.Thread(target=n8n, daemon=True) for _ in range(6)]
    for client in clients:
        client.start()
    engine = create_engine(pooled, poolclass=pool.NullPool)
    try:
        for _ in range(100):
            with (
                engine.connect() as connection,
                pytest.raises(CommandError, match="does not lead straight to the server"),
            ):
                pooler.refuse_transaction_pooler(connection)
        monkeypatch.setenv("POSTGRES_POOLER", "session")
        with engine.connect() as connection:
            pooler.refuse_transaction_pooler(connection)  # declared: let through
    finally:
        halt.set()
        for client in clients:
            client.join(30)
        engine.dispose()


def test_the_refusal_names_the_direct_url_when_it_is_the_pooler(
    debian_primary: Cluster, transaction_pooler: Cluster, primary_database: str
) -> None:
    pooled = transaction_pooler.url(primary_database).render_as_string(hide_password=False)
    env = environment(debian_primary.url(primary_database), DIRECT_DATABASE_URL=pooled)

    result = run([*ALEMBIC, "upgrade", "head"], env)

    assert result.returncode != 0
    assert "FAILED: DIRECT_DATABASE_URL does not lead straight to the server" in result.stdout
    assert _revision_and_locks(debian_primary, primary_database) == (None, 0, 0)


def test_four_parallel_deploys_through_the_pooler_with_a_direct_url_all_finish(
    debian_primary: Cluster, transaction_pooler: Cluster, primary_database: str
) -> None:
    direct = debian_primary.url(primary_database).render_as_string(hide_password=False)
    env = environment(
        transaction_pooler.url(primary_database),
        DIRECT_DATABASE_URL=direct,
        MIGRATION_LOCK_WAIT="2min",
        PATH=f"{BIN}:/usr/bin:/bin",
    )
    deploys = [
        subprocess.Popen(
            [*ALEMBIC, "upgrade", "head"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(deploy.wait(timeout=300), deploy.communicate()[1]) for deploy in deploys]

    assert [code for code, _ in outcomes] == [0, 0, 0, 0], [err[-800:] for _, err in outcomes]
    version, _, locks = _revision_and_locks(debian_primary, primary_database)
    assert (version, locks) == (HEAD, 0)
    # The tools that need a session read over the direct URL while DATABASE_URL is the pooler.
    for tool in (
        ["python", "-m", "media_db.deploy.verify"],
        ["python", "-m", "media_db.deploy.status"],
    ):
        checked = run(tool, env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    rolled_back = run([*ALEMBIC, "downgrade", "base"], env)
    assert rolled_back.returncode == 0, rolled_back.stderr[-800:]
    assert _revision_and_locks(debian_primary, primary_database) == (None, AFTER_BASE, 0)


def test_deploys_through_a_session_pooler_run_and_roll_back(
    debian_primary: Cluster, session_pooler: Cluster, primary_database: str
) -> None:
    env = environment(
        session_pooler.url(primary_database), POSTGRES_POOLER="session", MIGRATION_LOCK_WAIT="2min"
    )
    deploys = [
        subprocess.Popen(
            [*ALEMBIC, "upgrade", "head"],
            cwd=REPO_ROOT,
            env={**env, "PATH": f"{BIN}:{env.get('PATH', '')}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(deploy.wait(timeout=300), deploy.communicate()[1]) for deploy in deploys]
    assert [code for code, _ in outcomes] == [0, 0], [err[-800:] for _, err in outcomes]
    assert _revision_and_locks(debian_primary, primary_database)[::2] == (HEAD, 0)

    rolled_back = run([*ALEMBIC, "downgrade", "base"], env)

    assert rolled_back.returncode == 0, rolled_back.stderr[-800:]
    # Only our bookkeeping is left, and no lock stayed on a pooled connection.
    assert _revision_and_locks(debian_primary, primary_database) == (None, AFTER_BASE, 0)
