"""What each revision does to existing tables is the same on every tested major (the matrix runs
this on each): the locks it takes (docs/deploy.md's table), no table rewritten, and 0005's SET
NOT NULL proven by the validated CHECK instead of a scan under its ACCESS EXCLUSIVE lock."""

import re

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, text

from media_db.deploy.project import offline_sql
from tests.helpers import OURS, alembic_config

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

TABLES = ("media_items", "analysis_results", "processing_jobs")
# pg_locks modes, weakest first.
MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
# The strongest lock each transactional revision holds on each of our tables until it commits.
# 0003 is its offline form (one UPDATE per table; online it commits 5,000-row batches); 0007
# builds CONCURRENTLY outside any transaction (test_deploys_are_safe and the bench cover it).
LOCKS = {
    "0002": dict.fromkeys(TABLES, "AccessExclusiveLock"),
    "0003": {"analysis_results": "RowExclusiveLock", "processing_jobs": "RowExclusiveLock"},
    "0004": dict.fromkeys(TABLES, "ShareUpdateExclusiveLock"),
    "0005": {"analysis_results": "AccessExclusiveLock", "processing_jobs": "AccessExclusiveLock"},
    "0006": {"media_items": "ShareRowExclusiveLock"},
}
HELD = text("""
    SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    WHERE l.pid = pg_backend_pid() AND c.relname = ANY(:tables)
""").bindparams(tables=list(TABLES))
SEED = """
INSERT INTO media_items (id, source_url, source_type, file_size)
    SELECT gen_random_uuid(), 'u' || n, 's3', n FROM generate_series(1, 200) n;
INSERT INTO processing_jobs (workflow_type, status, media_item_id)
    SELECT 'transcode', NULL, id FROM media_items;
INSERT INTO analysis_results (analysis_type, provider, status, media_item_id)
    SELECT 'caption', 'p', NULL, id FROM media_items;
"""


def revision_sql(revision: str) -> list[str]:
    """The revision's offline SQL, statement by statement, without its BEGIN and COMMIT. In
    process, as `make sql` gets it: the `--sql` command line is tests/deploy's
    test_offline_sql_matches_online's subject."""
    previous = f"{int(revision) - 1:04d}"
    statements = re.split(r";\n(?=\n|$)", offline_sql("upgrade", f"{previous}:{revision}"))
    return [s.strip() for s in statements if s.strip() and s.strip() not in ("BEGIN", "COMMIT")]


def seeded_at_0001(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0001")
    connection.exec_driver_sql(SEED)
    connection.commit()


def strongest_locks(connection: Connection) -> dict[str, str]:
    held: dict[str, str] = {}
    for table, mode in connection.execute(HELD):
        if MODES.index(mode) > MODES.index(held.get(table, MODES[0])):
            held[table] = mode
    return {table: mode for table, mode in held.items() if mode != MODES[0]}


@pytest.mark.parametrize("revision", sorted(LOCKS))
def test_revision_takes_the_documented_locks(engine: Engine, revision: str) -> None:
    with engine.connect() as connection:
        seeded_at_0001(connection)
        command.upgrade(alembic_config(connection), f"{int(revision) - 1:04d}")
        for statement in revision_sql(revision):
            connection.exec_driver_sql(statement)
        held = strongest_locks(connection)
        connection.rollback()
    assert held == LOCKS[revision]


def test_no_revision_rewrites_a_table(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Consent: the way down drops 0010's columns, which every job row holds (nothing to keep).
    monkeypatch.setenv("ALLOW_DATA_LOSS", "1")
    monkeypatch.setenv("MIGRATION_BACKUP", "skip")
    with engine.connect() as connection:
        config = alembic_config(connection)
        seeded_at_0001(connection)
        before = relfilenodes(connection)
        command.upgrade(config, OURS)
        assert relfilenodes(connection) == before
        command.downgrade(config, "0001")  # back down: 0005 and 0004 re-add constraints
        assert relfilenodes(connection) == before


def relfilenodes(connection: Connection) -> dict[str, int]:
    """A table's file changes when PostgreSQL rewrites it."""
    files = text("SELECT relname, relfilenode FROM pg_class WHERE relname = ANY(:tables)")
    return {name: node for name, node in connection.execute(files, {"tables": list(TABLES)})}


def test_set_not_null_is_proven_by_the_check_not_by_a_scan(engine: Engine) -> None:
    with engine.connect() as connection:
        config = alembic_config(connection)
        seeded_at_0001(connection)
        command.upgrade(config, "0004")
        messages: list[str] = []
        connection.connection.driver_connection.add_notice_handler(  # type: ignore[union-attr]
            lambda notice: messages.append(str(notice.message_primary))
        )
        # The server says at DEBUG1 whether it proved NOT NULL from constraints or scanned.
        connection.execute(text("SET client_min_messages = debug1"))
        connection.commit()
        command.upgrade(config, "0005")
        # The control: without such a CHECK the server does scan, and says so.
        connection.exec_driver_sql("CREATE TABLE control AS SELECT 1 AS x")
        connection.exec_driver_sql("ALTER TABLE control ALTER COLUMN x SET NOT NULL")
        connection.rollback()
    assert 'verifying table "control"' in messages
    for table in ("processing_jobs", "analysis_results"):
        assert (
            f'existing constraints on column "{table}.status" are sufficient to prove that it '
            "does not contain nulls"
        ) in messages
        assert f'verifying table "{table}"' not in messages
