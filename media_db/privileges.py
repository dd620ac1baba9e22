"""The GRANTs a role lacks. PostgreSQL's permission denied (SQLSTATE 42501) names the object
refused, not the privilege: a worker's log line names the statement that fixes it, from what
the worker needs (Needs) and what the role has (has_table_privilege)."""

import re
from collections.abc import Mapping

from media_db.pool import Database

Needs = Mapping[str, tuple[str, ...]]  # table -> the privileges needed on it, e.g. ("SELECT",)
MISSING = (
    "SELECT need.name, need.privilege FROM unnest(%(tables)s::text[], %(privileges)s::text[]) "
    "AS need(name, privilege) WHERE to_regclass(need.name) IS NOT NULL "
    "AND NOT has_table_privilege(need.name, need.privilege)"
)
PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


async def missing_grants(db: Database, needs: Needs, role: str) -> list[str]:
    """`GRANT SELECT, UPDATE ON processing_jobs TO worker`: one statement per table whose
    privileges in `needs` the session's role lacks, in the order of `needs`."""
    pairs = [(table, privilege) for table, privileges in needs.items() for privilege in privileges]
    params = {"tables": [t for t, _ in pairs], "privileges": [p for _, p in pairs]}
    async with db.connection() as connection:
        rows = await (await connection.execute(MISSING, params)).fetchall()
    lacking = {(row["name"], row["privilege"]) for row in rows}
    grantee = role if PLAIN_NAME.fullmatch(role) else '"' + role.replace('"', '""') + '"'
    return [
        f"GRANT {', '.join(p for p in privileges if (table, p) in lacking)} ON {table} TO {grantee}"
        for table, privileges in needs.items()
        if any((table, p) in lacking for p in privileges)
    ]
