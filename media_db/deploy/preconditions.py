"""What pending revisions demand of the rows already there, checked before the deploy (the way
Atlas' pre-migration checks and Liquibase's preconditions do): each CHECK, UNIQUE and NOT NULL
they add, and the rows that would violate it now.

What a revision adds is read from its offline SQL (`alembic upgrade <current>:heads --sql`, the
statements that will run), not from its code: hand-written and `make revision`'s forms alike.
Rows that a pending revision's declared backfill (`backfills`) updates first are not counted.
Every count runs in a READ ONLY transaction, under the caller's statement_timeout and
lock_timeout; one that cannot be made says why.
"""

import re
from dataclasses import dataclass

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from media_db.deploy import progress, project

RUNNING = re.compile(r"^-- Running upgrade \S* ?-> (\S+)$", re.M)
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
COLUMNS = rf"{NAME}(?:, {NAME})*"
ADD_CHECK = re.compile(
    rf"ALTER TABLE ({NAME}) ADD CONSTRAINT ({NAME}) CHECK \((.*)\)(?: NOT VALID)?", re.S
)
ADD_UNIQUE = re.compile(rf"ALTER TABLE ({NAME}) ADD CONSTRAINT ({NAME}) UNIQUE \(({COLUMNS})\)")
UNIQUE_INDEX = re.compile(
    rf"CREATE UNIQUE INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?({NAME}) ON ({NAME}) "
    rf"\(({COLUMNS})\)(?: WHERE (.*))?",
    re.S,
)
SET_NOT_NULL = re.compile(rf"ALTER TABLE ({NAME}) ALTER COLUMN ({NAME}) SET NOT NULL")
# make revision's first step towards SET NOT NULL: the same demand, counted once.
NOT_NULL_CHECK = re.compile(rf"({NAME}) IS NOT NULL")


@dataclass(frozen=True)
class Demand:
    revision: str
    table: str
    what: str  # e.g. "CHECK media_items_max_width_check (width <= 100000)"
    violating: str  # SQL condition of a row that breaks it (UNIQUE: its columns, below)
    unique_columns: str = ""


@dataclass
class Finding:
    revision: str
    table: str
    what: str
    rows: int | None  # None: could not be counted (`error` says why)
    error: str = ""


def pending_sql(span_start: str) -> dict[str, list[str]]:
    """{revision: its upgrade's statements}, for every revision after `span_start`."""
    script = project.offline_sql("upgrade", f"{span_start}:heads" if span_start else "heads")
    parts = RUNNING.split(script)
    return {
        rev: [s.strip() for s in body.split(";\n") if s.strip()]
        for rev, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def demands(statements: dict[str, list[str]]) -> list[Demand]:
    found: dict[tuple[str, str], Demand] = {}  # (table, demand's key): the first revision's
    for rev, sql in statements.items():
        for statement in sql:
            for key, demand in _demands_of(rev, statement):
                found.setdefault((demand.table, key), demand)
    return list(found.values())


def _demands_of(rev: str, statement: str) -> list[tuple[str, Demand]]:
    if match := ADD_CHECK.fullmatch(statement):
        table, name, condition = match.groups()
        if column := NOT_NULL_CHECK.fullmatch(condition.strip()):
            return [_not_null(rev, table, column[1])]
        return [
            (name, Demand(rev, table, f"CHECK {name} ({condition})", f"({condition}) IS FALSE"))
        ]
    if match := SET_NOT_NULL.fullmatch(statement):
        return [_not_null(rev, *match.groups())]
    if match := ADD_UNIQUE.fullmatch(statement):
        table, name, columns = match.groups()
        return [(f"UNIQUE {columns}", _unique(rev, table, f"UNIQUE {name}", columns, "true"))]
    if match := UNIQUE_INDEX.fullmatch(statement):
        name, table, columns, where = match.groups()
        what = f"UNIQUE index {name}"
        return [(f"UNIQUE {columns}", _unique(rev, table, what, columns, where or "true"))]
    return []


def _not_null(rev: str, table: str, column: str) -> tuple[str, Demand]:
    return f"NOT NULL {column}", Demand(rev, table, f"{column} NOT NULL", f"{column} IS NULL")


def _unique(rev: str, table: str, what: str, columns: str, where: str) -> Demand:
    present = " AND ".join(f"{c} IS NOT NULL" for c in columns.split(", "))
    return Demand(rev, table, what, f"({where}) AND {present}", unique_columns=columns)


def check(connection: Connection, script: ScriptDirectory, current: list[str]) -> list[Finding]:
    """Rows that would violate what the revisions after `current` add (read-only)."""
    statements = pending_sql(current[0] if current else "")
    backfilled: dict[str, list[str]] = {}
    for rev in statements:
        for table, condition in progress.backfills_of(script, rev).items():
            backfilled.setdefault(table, []).append(condition)
    connection.rollback()
    connection.exec_driver_sql("SET TRANSACTION READ ONLY")
    findings = []
    try:
        for demand in demands(statements):
            if demand.table in project.OUR_TABLES:
                findings.append(_count(connection, demand, backfilled.get(demand.table, [])))
    finally:
        connection.rollback()
    return [finding for finding in findings if finding.rows != 0]


def _count(connection: Connection, demand: Demand, backfilled: list[str]) -> Finding:
    where = " AND ".join([demand.violating, *(f"NOT COALESCE(({c}), false)" for c in backfilled)])
    if demand.unique_columns:  # rows sharing their values with another row
        sql = (
            f"SELECT COALESCE(sum(n), 0) FROM (SELECT count(*) AS n FROM {demand.table} "
            f"WHERE {where} GROUP BY {demand.unique_columns} HAVING count(*) > 1) AS shared"
        )
    else:
        sql = f"SELECT count(*) FROM {demand.table} WHERE {where}"
    finding = Finding(demand.revision, demand.table, demand.what, None)
    savepoint = connection.begin_nested()
    try:
        finding.rows = int(connection.scalar(text(sql)) or 0)
    except DBAPIError as error:
        savepoint.rollback()
        reason = " ".join(str(error.orig).split())
        if getattr(error.orig, "sqlstate", "") in ("42703", "42P01"):
            finding.rows = 0  # a column or table a pending revision adds: no rows of it yet
        else:
            finding.error = reason
    else:
        savepoint.commit()
    return finding
