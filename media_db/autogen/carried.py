"""What depends on a column (media_db/dependents.py), carried to the column that replaces it in
an expand (media_db/autogen/expand_contract.py): indexes built CONCURRENTLY, CHECKs and foreign keys
added NOT VALID then validated, under temporary names until the contract; and why the server
would refuse one over the new type, asked beforehand on an empty temporary copy."""

import re

from alembic.operations import ops
from sqlalchemy import CheckConstraint, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex

from media_db import dependents, transitions
from media_db.autogen import forms
from media_db.autogen.keys import refused_by_server
from media_db.autogen.locks import CATALOG_ONLY, CONCURRENT, VALIDATED
from media_db.autogen.ops import AutocommitBlock, Comment, Statement
from media_db.autogen.state import UPGRADE, Rewrite
from media_db.transitions import quote


def carried(
    rw: Rewrite, dependent: dependents.Dependent, table: str, old: str, new: str
) -> list[ops.MigrateOperation]:
    """An index, UNIQUE constraint or CHECK on a renamed column's old name that the models keep
    under its name: built again over the new one (an index CONCURRENTLY, a CHECK NOT VALID then
    VALIDATE, after the backfill; every mention of the column moves, a partial index's WHERE
    included) under a temporary name, then, in one catalog step, the old one becomes
    `<name>__old` (until the contract drops it with its column) and the copy takes the name. A
    re-run after the swap drops the copy it made again."""
    name = dependent.name
    shadow, kept = transitions.shadow_name(name), transitions.kept_name(name)
    table_ = quote(table)
    if dependent.kind == dependents.UNIQUE:
        options = dependents.UNIQUE_OPTIONS.fullmatch(dependent.definition)
        assert options is not None, dependent.definition
        takes = (
            f"ALTER TABLE {table_} ADD CONSTRAINT {quote(name)} UNIQUE USING INDEX "
            f"{quote(shadow)}{options['rest']}"
        )
    else:
        takes = dependent.renamed_sql(table, shadow, name)
    leftover = (
        f"ALTER TABLE {table_} DROP CONSTRAINT IF EXISTS {quote(shadow)}"
        if dependent.kind == dependents.CHECK
        else f"DROP INDEX IF EXISTS {quote(shadow)}"
    )
    swapped = (
        f"to_regclass({transitions.literal(quote(kept))}) IS NOT NULL OR EXISTS (SELECT FROM "
        f"pg_constraint WHERE conrelid = to_regclass({transitions.literal(table_)}) AND "
        f"conname = {transitions.literal(kept)})"
    )
    swap = (
        f"DO $swap$ BEGIN IF NOT ({swapped}) THEN "
        f"{dependent.renamed_sql(table, name, kept)}; {takes}; "
        f"ELSE {leftover}; END IF; END $swap$"
    )
    rw.lock(
        UPGRADE,
        f"{dependent.kind} {name}: renamed to {kept}, its copy over {new} taking the name: "
        f"{CATALOG_ONLY}",
    )
    declared = declared_sql(rw, table, dependent, shadow)
    return [
        Comment(f"{name} over {new}; {old}'s stays as {kept} until the contract."),
        *built(rw, UPGRADE, dependent, table, old, new, shadow, declared),
        Statement(swap),
    ]


def refused_carries(
    rw: Rewrite, where: str, table: str, carry: list[dependents.Dependent]
) -> list[str]:
    """Why the dependents a transition carries cannot be (each copy is named for its
    transition: `<name>__new`, then the original keeps `<name>__old` until the contract):
    one another transition carries too, in this revision or still in flight; a CHECK or index
    the models drop in the same revision (autogenerate's drop, and its way back, would miss the
    copy). Each carried dependent is noted for the next transition of the revision."""
    declared = rw.metadata.tables.get(table)
    kept_by_models: set[str] = set()
    if declared is not None:
        kept_by_models = {str(c.name) for c in declared.constraints}
        kept_by_models |= {str(i.name) for i in declared.indexes}
    refusals = []
    for dependent in carry:
        kept = transitions.kept_name(dependent.name)
        named = f"{dependent.kind} {dependent.name}"
        copy_of = transitions.is_a_copy(dependent.name)
        if dependent.name in rw.carrying:
            refusals.append(
                f"{where}: {named} is carried by {rw.carrying[dependent.name]} too, in this "
                "revision, and one transition at a time can carry it: change one column in this "
                "revision and the other in the next, after its contract"
            )
        elif copy_of or rw.connection.scalar(
            text(EXISTS_ON_TABLE), {"table": quote(table), "name": kept}
        ):
            held = (
                "a copy made by a transition in flight"
                if copy_of
                else f"still carried by a transition in flight ({kept} stays until its contract)"
            )
            refusals.append(
                f"{where}: {named} is {held}: contract that transition first, then run make "
                "revision again"
            )
        elif dependent.kind in (dependents.CHECK, dependents.INDEX) and (
            dependent.name not in kept_by_models
        ):
            refusals.append(
                f"{where}: the models drop {named} in the same revision: drop it in a revision "
                "of its own first, then change the column"
            )
        rw.carrying[dependent.name] = where
    return refusals


# Whether `name` is an index or a constraint of `table` (both share the copies' names).
EXISTS_ON_TABLE = """
    SELECT to_regclass(quote_ident(:name)) IS NOT NULL OR EXISTS (
        SELECT FROM pg_constraint WHERE conrelid = to_regclass(:table) AND conname = :name)
"""


def names_the_old_column(
    rw: Rewrite, table: str, dependent: dependents.Dependent, old: str, new: str
) -> str | None:
    """Why the models' own form of `dependent`, which a rename carries to `new`, cannot stand
    once the contract drops `old` (its CheckConstraint or Index text still names `old`), or
    None. Asked on an empty temporary copy of the table with `old` renamed `new`, in a
    savepoint rolled back: nothing of ours is locked or changed."""
    probe = transitions.identifier(f"media_db_probe_{table}")
    declared = declared_sql(rw, table, dependent, f"{probe}_declared", on=probe)
    if declared is None:
        return None
    why = refused_by_server(
        rw.connection,
        f"CREATE TEMPORARY TABLE {quote(probe)} (LIKE {quote(table)})",
        f"ALTER TABLE {quote(probe)} RENAME COLUMN {quote(old)} TO {quote(new)}",
        declared,
    )
    if why is None:
        return None
    return (
        f"{dependent.kind} {dependent.name}, as the models declare it, still names {old}, "
        f"which the contract drops ({why}): write it over {new} in the models, then run make "
        "revision again"
    )


def declared_sql(
    rw: Rewrite,
    table: str,
    dependent: dependents.Dependent,
    name: str,
    *,
    over: tuple[str, str] | None = None,
    on: str | None = None,
) -> str | None:
    """The SQL building `dependent` as the models declare it (same name), named `name`: what a
    fresh database has, to the letter (PostgreSQL stores an `IN (...)` read back from its own
    catalog in another form than the one it parsed, and keeps the casts an old type needed).
    `over`: (column, other) every mention of the column naming the other instead; `on`: built
    on that (temporary, empty) table instead, not concurrently. None where the models do not
    declare it."""
    declared = rw.metadata.tables.get(table)
    if declared is None:
        return None
    dialect = rw.connection.dialect
    target = quote(on or table)
    if dependent.kind == dependents.CHECK:
        checks = [c for c in declared.constraints if c.name == dependent.name]
        if not checks or not isinstance(checks[0], CheckConstraint):
            return None
        condition = checks[0].sqltext.compile(dialect=dialect)
        sql = f"ALTER TABLE {target} ADD CONSTRAINT {quote(name)} CHECK ({condition}) NOT VALID"
    else:
        indexes = [i for i in declared.indexes if i.name == dependent.name]
        if dependent.kind != dependents.INDEX or not indexes:
            return None  # a UNIQUE constraint's index: its columns, as the catalog has them
        created = str(CreateIndex(indexes[0]).compile(dialect=dialect)).strip()
        how = "" if on else "CONCURRENTLY IF NOT EXISTS "
        sql = re.sub(
            rf"^CREATE (UNIQUE )?INDEX (?:CONCURRENTLY )?\S+ ON {re.escape(quote(table))} ",
            lambda m: f"CREATE {m[1] or ''}INDEX {how}{quote(name)} ON {target} ",
            created,
        )
    return sql if over is None else dependents.over_column(sql, *over)


def built(
    rw: Rewrite,
    direction: str,
    dependent: dependents.Dependent,
    table: str,
    column: str,
    over: str,
    name: str,
    sql: str | None = None,
) -> list[ops.MigrateOperation]:
    """`dependent` (an index, a CHECK, a foreign key or a UNIQUE constraint's index on
    `column`) built again over the column `over`, named `name`, without blocking writes;
    `sql`: its definition, where the models give it (else the catalog's, moved)."""
    sql = sql or dependent.over(table, column, over, name)
    if dependent.kind in (dependents.CHECK, dependents.FOREIGN_KEY):
        check = dependent.kind == dependents.CHECK
        rw.lock(
            direction,
            f"{'check constraint' if check else 'foreign key'} {name} on {table}: ADD ... NOT "
            f"VALID takes {CATALOG_ONLY}; then {VALIDATED}",
        )
        type_ = "check" if check else "foreignkey"
        return forms.validated(rw, direction, table, name, type_, Statement(sql))
    rw.lock(direction, f"create_index {name} CONCURRENTLY on {table}: {CONCURRENT}")
    return [
        AutocommitBlock([Statement(transitions.invalid_index_dropped_sql(name)), Statement(sql)])
    ]


def uncarried(rw: Rewrite, blocking: list[dependents.Dependent]) -> str | None:
    """Why the column's dependents keep it from moving (None: nothing does)."""
    if not blocking:
        return None
    return (
        f"{'; '.join(map(str, blocking))} depend{'s' if len(blocking) == 1 else ''} on it, "
        "and make revision carries only indexes, CHECKs, UNIQUE constraints, foreign keys and "
        "a one-column primary key from one column to another"
    )


def refused_by_new_type(
    rw: Rewrite,
    table: str,
    column: str,
    new_type: str,
    carried: list[dependents.Dependent],
    renamed: str | None = None,
) -> str | None:
    """Why the server would refuse an index or CHECK of `carried` over `column` as `new_type`
    (renamed `renamed`, where a rename changes its type too), or None: each in the form the
    expand builds it, the models' where they declare it (an operator class or a function the
    type lacks). Asked on an empty temporary copy of the table, in a savepoint rolled back:
    nothing of ours is locked or changed. (A foreign key is asked by refused_foreign_keys: a
    temporary table references only temporary ones.)"""
    probe, connection = transitions.identifier(f"media_db_probe_{table}"), rw.connection
    named = renamed or column
    with connection.begin_nested() as savepoint:
        connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {quote(probe)} (LIKE {quote(table)})")
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(probe)} ALTER COLUMN {quote(column)} TYPE {new_type} USING NULL"
        )
        if renamed:
            connection.exec_driver_sql(
                f"ALTER TABLE {quote(probe)} RENAME COLUMN {quote(column)} TO {quote(renamed)}"
            )
        try:
            for dependent in carried:
                if dependent.kind == dependents.FOREIGN_KEY:
                    continue
                copy = transitions.shadow_name(dependent.name)
                sql = declared_sql(rw, table, dependent, copy, on=probe) or dependent.over(
                    probe, column, named, copy
                )
                with connection.begin_nested():
                    connection.exec_driver_sql(sql.replace(" CONCURRENTLY", ""))
        except DBAPIError as error:
            message = str(error.orig).splitlines()[0]
            return f"{dependent} cannot be carried to {new_type}: {message}"
        finally:
            savepoint.rollback()
    return None
