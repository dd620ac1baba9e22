"""Which sessions hold our tables now: what a migration waiting for a lock, and the operator
before a deploy, need to know. One query, in our database only (pg_locks is cluster-wide)."""

from typing import Any

from sqlalchemy import Connection, text

from media_db.deploy import project

HOLDING_OUR_TABLES = text("""
    SELECT DISTINCT a.pid, coalesce(a.application_name, '') AS application, a.state,
           extract(epoch FROM now() - a.xact_start) AS age, left(a.query, 200) AS query
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation IN (SELECT to_regclass(t) FROM unnest(CAST(:tables AS text[])) t)
    ORDER BY age DESC, a.pid
""")


def holding_our_tables(connection: Connection) -> list[Any]:
    """Every other session holding a lock on one of our tables, the oldest transaction first."""
    return list(connection.execute(HOLDING_OUR_TABLES, {"tables": list(project.OUR_TABLES)}))


def one_line(row: Any) -> str:
    return f"pid {row.pid} ({row.application or '?'}, {row.state}): {' '.join(row.query.split())}"
