"""Expand/contract transitions: the schema changes that have no lock-safe form in one step (a
rename, a NOT NULL column with no default, a volatile default, a rewriting type change), written
as an expand (every writer of the old shape keeps working) and, once the models drop the
marker, a contract.

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

from sqlalchemy import Column, Connection, MetaData, Table, text
from sqlalchemy.dialects import postgresql

RENAMED_FROM, BACKFILL, USING = "renamed_from", "backfill", "using"
DOWN = "down"  # beside `using`: the old column's value, as SQL over a new-shape row
RENAME, FILL, RETYPE = "rename", "backfill", "retype"  # the kinds in flight, by their marker
MARKERS = {RENAMED_FROM: RENAME, BACKFILL: FILL, USING: RETYPE}
TAG = "media_db expand/contract: "
# A write giving both names of a rename, disagreeing (integrity_constraint_violation).
BOTH_GIVEN = "23000"
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


# An index a failed CREATE INDEX CONCURRENTLY left INVALID: it holds the name, and a retry with
# IF NOT EXISTS would then build nothing.
INVALID_INDEX = (
    "SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = {name} AND c.relnamespace = CAST(current_schema() AS regnamespace) "
    "AND NOT i.indisvalid"
)


def identifier(name: str) -> str:
    """`name`, shortened with a hash when it is longer than PostgreSQL keeps."""
    if len(name) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9]}_{digest}"


def sync_name(table: str, column: str) -> str:
    return identifier(f"{table}_{column}_sync")


def shadow_name(name: str) -> str:
    """A carried object's name over the new column, before it takes `name`."""
    return identifier(f"{name}__new")


def kept_name(column: str) -> str:
    """What a type change's old column is called from its cutover to its contract."""
    return identifier(f"{column}__old")


def is_a_copy(name: str) -> bool:
    """Whether `name` is one a transition gives a copy or a kept original (shadow_name,
    kept_name)."""
    return name in (shadow_name(name[: -len("__new")]), kept_name(name[: -len("__old")]))


def over_row(expression: str) -> str:
    """`expression` (SQL naming the row's columns) evaluated on a trigger's NEW row."""
    return f"(SELECT {expression} FROM (SELECT (NEW).*) AS new_row)"


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Transition:
    """One column moving to its new shape: `column` as the models name it, given by `source`
    (SQL over the row: the old column of a rename, `using` over it where the type changes too,
    a backfill marker's expression)."""

    kind: str
    table: str
    column: str
    source: str
    old: str | None = None  # the old column (rename, type change), kept until the contract
    revision: str = ""
    back: str | None = None  # SQL over the row giving `old` (None: `column` as is)
    # A rename's defaults, each column keeping its own (none volatile): a column that holds its
    # default after an INSERT was not given, so an explicit NULL in the other one stays NULL.
    default: str | None = None
    old_default: str | None = None
    # A rename whose defaults are not kept: whether the new column has one (a catalog comment
    # written before this field says nothing: taken as yes, the safe side).
    new_defaulted: bool = True

    @property
    def name(self) -> str:
        return sync_name(self.table, self.column)

    # --- the sync trigger ---------------------------------------------------------------------

    def create_sql(self, *, in_flight: bool = True) -> list[str]:
        """The function and its trigger (a leftover of a failed run replaced); commented
        `in_flight` (not a type change's before its cutover, which the expand itself ends)."""
        table, name = quote(self.table), quote(self.name)
        comment = literal(TAG + json.dumps(asdict(self)))
        return [
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$sync$ BEGIN {self._body()} RETURN NEW; END $sync$",
            f"DROP TRIGGER IF EXISTS {name} ON {table}",
            f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            *([f"COMMENT ON TRIGGER {name} ON {table} IS {comment}"] if in_flight else []),
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
            return f"IF NEW.{new} IS NULL THEN NEW.{new} := {over_row(self.source)}; END IF;"
        old = quote(self.old)
        if self.kind == RETYPE:  # after the cutover every writer names `new`
            assert self.back is not None, self
            # Only from a value written: an UPDATE of another column must not rewrite the kept
            # original from a narrowed value (a rollback would restore the narrowed one).
            return (
                f"IF TG_OP = 'INSERT' OR NEW.{new} IS DISTINCT FROM OLD.{new} THEN "
                f"NEW.{old} := {over_row(self.back)}; END IF;"
            )
        return self._rename_body(new, old)

    def _rename_body(self, new: str, old: str) -> str:
        """A rename, its type changed too where `back` is set: each write copied to the name
        it did not give (`source` converts old to new, `back` new to old). Neither is rewritten
        from the other where they already agree (a narrowed value in `new` leaves the original
        in `old`); a write giving both, disagreeing, is refused rather than one dropped."""
        from_old = f"NEW.{old}" if self.back is None else over_row(self.source)
        from_new = f"NEW.{new}" if self.back is None else over_row(self.back)
        disagree = (
            f"NEW.{new} IS DISTINCT FROM {from_old} AND NEW.{old} IS DISTINCT FROM {from_new}"
        )
        refusal = literal(
            f"{self.table}: one write gave both {self.old} and {self.column}, with different "
            f"values, while {self.old} is renamed to {self.column} (sync trigger {self.name}). "
            "Write one of them."
        )
        refuse = f"RAISE EXCEPTION USING ERRCODE = '{BOTH_GIVEN}', MESSAGE = {refusal};"
        new_changed = f"NEW.{new} IS DISTINCT FROM OLD.{new}"
        old_changed = f"NEW.{old} IS DISTINCT FROM OLD.{old}"
        # An UPDATE copies the name it changed.
        updated = (
            f"IF TG_OP = 'UPDATE' THEN "
            f"IF {new_changed} AND {old_changed} AND {disagree} THEN {refuse} "
            f"ELSIF {new_changed} AND NEW.{new} IS DISTINCT FROM {from_old} THEN "
            f"NEW.{old} := {from_new}; "
            f"ELSIF {old_changed} AND NEW.{old} IS DISTINCT FROM {from_new} THEN "
            f"NEW.{new} := {from_old}; END IF; "
        )
        # An INSERT copies the name it gave: with defaults, the one that does not hold its
        # default; without, a NULL means "not given" (the old column has no default during the
        # transition). Where only the new column has one, a writer of the old name alone cannot
        # be told from one giving both: the old name wins.
        shared = self.default is not None and self.old_default is not None
        if not shared and self.new_defaulted:
            return updated + (
                f"ELSIF NEW.{old} IS NOT NULL THEN NEW.{new} := {from_old}; "
                f"ELSE NEW.{old} := {from_new}; END IF;"
            )
        new_given, old_given = (
            (
                f"NEW.{new} IS DISTINCT FROM ({self.default})",
                f"NEW.{old} IS DISTINCT FROM ({self.old_default})",
            )
            if shared
            else (f"NEW.{new} IS NOT NULL", f"NEW.{old} IS NOT NULL")
        )
        return updated + (
            f"ELSIF {new_given} AND {old_given} THEN IF {disagree} THEN {refuse} END IF; "
            f"ELSIF {new_given} THEN NEW.{old} := {from_new}; "
            f"ELSIF {old_given} THEN NEW.{new} := {from_old}; END IF;"
        )


def invalid_index_dropped_sql(name: str) -> str:
    """Drop the index `name` if a failed concurrent build left it INVALID. A DO block cannot
    drop CONCURRENTLY; a plain DROP INDEX of an invalid index is a catalog change, its lock
    brief and bounded by lock_timeout."""
    probe = INVALID_INDEX.format(name=literal(name))
    return f"DO $$ BEGIN IF EXISTS ({probe}) THEN DROP INDEX {quote(name)}; END IF; END $$"


def not_null_named_sql(table: str, column: str) -> str:
    """PostgreSQL 18 names a column's NOT NULL constraint (`<table>_<column>_not_null`) and keeps
    that name when the column is renamed: give `column`'s the name a fresh database would, or
    `make verify` sees drift once a cutover has swapped the names. Nothing before 18 (no such
    constraint: contype 'n' is never found)."""
    wanted = identifier(f"{table}_{column}_not_null")
    return (
        "DO $not_null$ DECLARE found name; BEGIN "
        "SELECT con.conname INTO found FROM pg_constraint con JOIN pg_attribute a "
        "ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1] "
        f"WHERE con.conrelid = to_regclass({literal(quote(table))}) AND con.contype = 'n' "
        f"AND a.attname = {literal(column)}; "
        f"IF found IS NOT NULL AND found <> {literal(wanted)} THEN "
        f"EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', {literal(table)}, found, "
        f"{literal(wanted)}); END IF; END $not_null$"
    )


def while_column_sql(table: str, column: str, sql: str) -> str:
    """`sql` (one statement, or a DO block) run only while `table` has the column `column`:
    a step of a transaction that drops or renames that column, which a re-run after the
    transaction committed (a later step of the same revision cut it) skips instead of failing
    on what is gone, or dropping what came back."""
    there = column_there(table, column)
    step = f"EXECUTE {literal(sql)}" if sql.startswith("DO ") else sql
    return f"DO $while$ BEGIN IF {there} THEN {step}; END IF; END $while$"


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


def guard_name(table: str, dropped: str) -> str:
    """The index of the rows the guard refuses before `dropped` goes (guard_index_sql)."""
    return identifier(f"{table}_{dropped}_guard")


def guard_index_sql(table: str, dropped: str, kept: str, *, probe: str | None = None) -> str:
    """The guard's rows indexed, CONCURRENTLY (writes go on): under the drop's lock the guard
    then reads this index, normally empty, instead of the whole table. Its predicate must be
    IMMUTABLE; the index goes with `dropped`. `probe`: a temporary copy of `table` to try the
    predicate on (not concurrently: a temporary table has no other writer)."""
    name, on = guard_name(table, dropped), probe or table
    how = "" if probe else "CONCURRENTLY IF NOT EXISTS "
    return (
        f"CREATE INDEX {how}{quote(name)} ON {quote(on)} "
        f"(({quote(dropped)} IS NULL)) WHERE {lacking(dropped, kept)}"
    )


def column_there(table: str, column: str) -> str:
    """Whether `table` has the column `column`: a boolean SQL expression."""
    return (
        "EXISTS (SELECT FROM pg_attribute WHERE attrelid = "
        f"to_regclass({literal(quote(table))}) AND attname = {literal(column)} "
        "AND NOT attisdropped)"
    )


def guarded_drop_sql(
    table: str, dropped: str, kept: str, *, kept_column: bool, indexed: bool = False
) -> list[str]:
    """Lock `table` ACCESS EXCLUSIVE and refuse, rolling the revision back, if a row's `dropped`
    holds what `kept` lacks; the drop that follows then loses nothing, so no consent is asked.
    `kept_column`: `kept` is a column the values can be copied to. `indexed`: the guard's index
    was built (guard_index_sql), and the guard reads it rather than the table."""
    table_, where = quote(table), lacking(dropped, kept)
    fix = (
        f"copy them over (UPDATE {table} SET {kept} = {dropped} WHERE {where})"
        if kept_column
        else f"to lose them, set them to what it gives (UPDATE {table} SET {dropped} = {kept} "
        f"WHERE {where})"
    )
    why = "" if kept_column else ", wrote the new shape, or wrote what the new type narrows"
    refusal = (
        f"Refusing to drop {table}.{dropped}: rows hold values that {kept} does not give back "
        f"(a writer bypassed the sync trigger{why}). Nothing was dropped: {fix}, then run it "
        "again."
    )
    check = (
        f"IF EXISTS (SELECT FROM {table_} WHERE {where}) THEN "
        f"RAISE EXCEPTION USING MESSAGE = {literal(refusal)}; END IF;"
    )
    if indexed:
        # The planner could take a scan that stops at the first row for cheaper; for this
        # statement only, the table is read through an index.
        check = (
            "PERFORM set_config('enable_seqscan', 'off', true); "
            f"{check} PERFORM set_config('enable_seqscan', was, true);"
        )
        declare = "DECLARE was text := current_setting('enable_seqscan'); "
    else:
        declare = ""
    return [
        f"LOCK TABLE {table_} IN ACCESS EXCLUSIVE MODE",
        f"DO $guard$ {declare}BEGIN {check} END $guard$",
    ]


# --- what is in flight: the catalog, and the models' markers --------------------------------


def in_flight(connection: Connection) -> list[Transition]:
    """Every transition whose sync trigger is on one of the current schema's tables."""
    return [
        Transition(**json.loads(comment.removeprefix(TAG)))
        for (comment,) in connection.execute(IN_FLIGHT, {"tag": TAG})
    ]


def column_named(table: Table | None, name: str) -> Column[Any] | None:
    """The models' column called `name` in the database. Not `table.c[name]`: that is keyed by
    the column's key, which a rename may keep (the name the data layer's code uses)."""
    found = [column for column in table.columns if column.name == name] if table is not None else []
    return found[0] if found else None


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
    """Whether `name` on `table` (a column, a trigger, an index or a constraint) belongs to a
    transition the models still declare: the old column of a rename or a type change, the old
    column's copies of the table's indexes and constraints (`<name>__old`: a type change's,
    media_db/dependents.py, and a rename's indexes, rules.constraints), a marked
    column's sync trigger, the guard's index over either column. Autogenerate neither drops
    them nor reports them before the marker goes."""
    for (marked_table, column), (kind, value) in marked(metadata).items():
        if marked_table != table:
            continue
        old = {RENAME: value, RETYPE: kept_name(column)}.get(kind)
        if name in (sync_name(table, column), old):
            return True
        # The guard's index, where a refused drop left it (it goes with its column).
        if name in {guard_name(table, dropped) for dropped in (column, old) if dropped}:
            return True
        copies = {kept_name(other) for other in _object_names(metadata, table)}
        if name in copies:
            return True
        # A renamed primary key's unique index over the new column, until the contract.
        if kind == RENAME and name == shadow_name(str(metadata.tables[table].primary_key.name)):
            return True
    return False


def _object_names(metadata: MetaData, table: str) -> list[str]:
    declared = metadata.tables[table]
    indexes = [index.name for index in declared.indexes]
    constraints = [constraint.name for constraint in declared.constraints]
    return [str(name) for name in (*indexes, *constraints) if name]


def describe(moving: Transition) -> str:
    """One line for the operator: what moves, where, since which revision."""
    what = {
        RENAME: f"rename {moving.table}.{moving.old} -> {moving.column}",
        RETYPE: f"retype {moving.table}.{moving.column}, the old type kept in {moving.old}",
    }.get(moving.kind, f"backfill {moving.table}.{moving.column} from {moving.source}")
    return f"{what} (sync trigger {moving.name}, expand {moving.revision or '?'})"


def contracting(connection: Connection, metadata: MetaData) -> list[Transition]:
    """The transitions in flight that the models still declare (their marker is there)."""
    declared = marked(metadata)
    return [
        transition
        for transition in in_flight(connection)
        if declared.get((transition.table, transition.column), ("",))[0] == transition.kind
    ]
