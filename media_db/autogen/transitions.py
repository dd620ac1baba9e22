"""Expand/contract transitions: the schema changes that have no lock-safe form in one step,
written as an expand (every writer of the old shape keeps working) and, once the models drop
the marker, a contract.

The models declare the intent in Column.info (MARKERS). The catalog holds each transition in
flight: a trigger `<table>_<column>_sync` on our table, executing the function of the same name,
commented with what it keeps in step (TAG, then JSON). `make revision`, `make verify`,
`alembic check` and `make status` read the two, so no list of transitions is kept elsewhere.
Every SQL text a transition runs is written here.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Column, Connection, MetaData, text
from sqlalchemy.dialects import postgresql

RENAMED_FROM, BACKFILL = "renamed_from", "backfill"
RENAME, FILL = "rename", "backfill"  # the kinds in flight, by the marker that starts them
MARKERS = {RENAMED_FROM: RENAME, BACKFILL: FILL}
TAG = "media_db expand/contract: "
BATCH = 5_000  # rows per committed batch, as 0003
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
quote = postgresql.dialect().identifier_preparer.quote  # type: ignore[no-untyped-call]

IN_FLIGHT = text("""
    SELECT obj_description(t.oid, 'pg_trigger') FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = CAST(current_schema() AS regnamespace) AND NOT t.tgisinternal
      AND starts_with(coalesce(obj_description(t.oid, 'pg_trigger'), ''), :tag)
    ORDER BY c.relname, t.tgname
""")


def identifier(name: str) -> str:
    """`name`, shortened with a hash when it is longer than PostgreSQL keeps."""
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


def sync_name(table: str, column: str) -> str:
    return identifier(f"{table}_{column}_sync")


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Transition:
    """One column moving to its new shape: `column` as the models name it, given by `source`
    (SQL over the row: the old column of a rename, a backfill marker's expression)."""

    kind: str
    table: str
    column: str
    source: str
    old: str | None = None  # a rename's old column, kept in step until the contract
    revision: str = ""

    @property
    def name(self) -> str:
        return sync_name(self.table, self.column)

    # --- the sync trigger ---------------------------------------------------------------------

    def create_sql(self) -> list[str]:
        """The function and its trigger (a leftover of a failed run replaced), commented."""
        table, name = quote(self.table), quote(self.name)
        return [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$sync$ BEGIN {self._body()} RETURN NEW; END $sync$",
            f"DROP TRIGGER IF EXISTS {name} ON {table}",
            f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            f"COMMENT ON TRIGGER {name} ON {table} IS {literal(TAG + json.dumps(asdict(self)))}",
        ]

    def drop_sql(self) -> list[str]:
        name = quote(self.name)
        return [
            f"DROP TRIGGER IF EXISTS {name} ON {quote(self.table)}",
            f"DROP FUNCTION IF EXISTS {name}()",
        ]

    def _body(self) -> str:
        new = quote(self.column)
        if self.old is None:
            # The row's own columns, by name, for the marker's expression.
            return (
                f"IF NEW.{new} IS NULL THEN NEW.{new} := "
                f"(SELECT {self.source} FROM (SELECT (NEW).*) AS new_row); END IF;"
            )
        old = quote(self.old)
        # An UPDATE copies the name it changed; an INSERT the name it gave (the old column has
        # no default during the transition, so a NULL there means "not given").
        return (
            f"IF TG_OP = 'UPDATE' AND NEW.{new} IS DISTINCT FROM OLD.{new} THEN "
            f"NEW.{old} := NEW.{new}; "
            f"ELSIF TG_OP = 'UPDATE' AND NEW.{old} IS DISTINCT FROM OLD.{old} THEN "
            f"NEW.{new} := NEW.{old}; "
            f"ELSIF TG_OP = 'INSERT' AND NEW.{old} IS NULL THEN NEW.{old} := NEW.{new}; "
            f"ELSE NEW.{new} := NEW.{old}; END IF;"
        )


# --- backfills and guards (any column filled from an expression over the row) -----------------


def still_to_do(target: str, source: str) -> str:
    """A row the backfill of `target` from `source` has left (a NULL source stays NULL: the
    batches end)."""
    return f"{quote(target)} IS NULL AND ({source}) IS NOT NULL"


def backfill_sql(table: str, key: str, target: str, source: str, *, batched: bool) -> str:
    """One UPDATE filling `target`; `batched`: BATCH rows of it (the committed batches' form,
    as 0003's, which the migration connection's throttle recognises)."""
    table_ = quote(table)
    where = still_to_do(target, source)
    if batched:
        where = f"{quote(key)} IN (SELECT {quote(key)} FROM {table_} WHERE {where} LIMIT {BATCH})"
    return f"UPDATE {table_} SET {quote(target)} = {source} WHERE {where}"


def lacking(dropped: str, kept: str) -> str:
    """A row whose `dropped` column holds a value that `kept` (SQL over the row) does not give
    back: what dropping it would lose."""
    return f"{quote(dropped)} IS NOT NULL AND {quote(dropped)} IS DISTINCT FROM ({kept})"


def guarded_drop_sql(table: str, dropped: str, kept: str, *, kept_column: bool) -> list[str]:
    """Lock `table` ACCESS EXCLUSIVE and refuse, rolling the revision back, if a row's `dropped`
    holds what `kept` lacks; the drop that follows then loses nothing, so no consent is asked.
    `kept_column`: `kept` is a column the values can be copied to."""
    table_, where = quote(table), lacking(dropped, kept)
    fix = (
        f"copy them over (UPDATE {table} SET {kept} = {dropped} WHERE {where})"
        if kept_column
        else f"to lose them, set them to what it gives (UPDATE {table} SET {dropped} = {kept} "
        f"WHERE {where})"
    )
    refusal = (
        f"Refusing to drop {table}.{dropped}: rows hold values that {kept} does not give back "
        f"(a writer bypassed the sync trigger, or wrote the new shape). Nothing was dropped: "
        f"{fix}, then run it again."
    )
    return [
        f"LOCK TABLE {table_} IN ACCESS EXCLUSIVE MODE",
        f"DO $guard$ BEGIN IF EXISTS (SELECT FROM {table_} WHERE {where}) THEN "
        f"RAISE EXCEPTION USING MESSAGE = {literal(refusal)}; END IF; END $guard$",
    ]


# --- what is in flight: the catalog, and the models' markers --------------------------------


def in_flight(connection: Connection) -> list[Transition]:
    """Every transition whose sync trigger is on one of the current schema's tables."""
    return [
        Transition(**json.loads(comment.removeprefix(TAG)))
        for (comment,) in connection.execute(IN_FLIGHT, {"tag": TAG})
    ]


def marker(column: Column[Any]) -> tuple[str, str] | None:
    """(kind, value) of the transition the column's info declares, or None."""
    found = [(kind, column.info[key]) for key, kind in MARKERS.items() if key in column.info]
    return found[0] if found else None


def marked(metadata: MetaData) -> dict[tuple[str, str], tuple[str, str]]:
    """{(table, column): (kind, value)} for every column of the models carrying a marker."""
    return {
        (table.name, column.name): found
        for table in metadata.tables.values()
        for column in table.columns
        if (found := marker(column)) is not None
    }


def hidden(metadata: MetaData, table: str, name: str) -> bool:
    """Whether `name` on `table` (a column, or a trigger) belongs to a transition the models
    still declare: the old column of a rename, a marked column's sync trigger. Autogenerate
    neither drops them nor reports them before the marker goes."""
    for (marked_table, column), (kind, value) in marked(metadata).items():
        if marked_table == table and (
            name == sync_name(table, column) or (kind == RENAME and name == value)
        ):
            return True
    return False


def describe(moving: Transition) -> str:
    """One line for the operator: what moves, where, since which revision."""
    what = (
        f"rename {moving.table}.{moving.old} -> {moving.column}"
        if moving.old is not None
        else f"backfill {moving.table}.{moving.column} from {moving.source}"
    )
    return f"{what} (sync trigger {moving.name}, expand {moving.revision or '?'})"


def contracting(connection: Connection, metadata: MetaData) -> list[Transition]:
    """The transitions in flight that the models still declare (their marker is there)."""
    declared = marked(metadata)
    return [
        transition
        for transition in in_flight(connection)
        if declared.get((transition.table, transition.column), ("",))[0] == transition.kind
    ]
