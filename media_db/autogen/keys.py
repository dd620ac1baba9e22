"""A one-column primary key and the foreign keys referencing it, through a rename or a type
change (media_db/autogen/expand_contract.py): the unique index built beside the key, which becomes
the key at the cutover or the contract, the foreign keys added again over it, and the server asked
beforehand, on empty temporary copies, whether the new type can reference or be referenced."""

from alembic.operations import ops
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from media_db import dependents, transitions
from media_db.autogen import forms
from media_db.autogen.locks import CATALOG_ONLY, CONCURRENT, VALIDATED
from media_db.autogen.ops import AutocommitBlock, Comment, Statement
from media_db.autogen.state import DOWNGRADE, UPGRADE, Rewrite
from media_db.transitions import Transition, quote


def moves_primary_key(rw: Rewrite, dependent: dependents.Dependent, table: str, new: str) -> bool:
    """Whether `dependent` is the table's primary key, on the old column alone, and the models
    put it on `new` alone: it follows the rename (expand_rename, contract_old_column)."""
    declared = rw.metadata.tables.get(table)
    return (
        dependent.kind == dependents.PRIMARY_KEY
        and declared is not None
        and [column.name for column in declared.primary_key.columns] == [new]
        and dependent.definition.count(",") == 0
    )


def refused_foreign_keys(rw: Rewrite, table: str, column: str, new_type: str) -> str | None:
    """Why the foreign keys the models declare over `column`, of `new_type`, cannot be built
    (the server asked: refused_referencing_type), or None. The expand would add them (NOT
    VALID, then VALIDATE) and fail there, after the steps before it committed."""
    model = transitions.column_named(rw.metadata.tables.get(table), column)
    for key in model.foreign_keys if model is not None else ():
        target = key.column
        if rw.connection.scalar(text("SELECT to_regclass(:t)"), {"t": quote(target.table.name)}):
            why = refused_referencing_type(
                rw.connection, column, new_type, target.table.name, target.name
            )
            if why is not None:
                return (
                    f"its foreign key to {target.table.name}.{target.name} cannot be over "
                    f"{new_type} ({why}). Keep its type (its foreign key follows a rename "
                    "or a type it can reference), or first take the ForeignKey off the model, "
                    "with the relationship()s that join through it, in a revision of its own"
                )
    return None


def primary_key_index(
    rw: Rewrite,
    direction: str,
    table: str,
    column: str,
    key: str,
    index: str | None = None,
    at: str = "the contract",
) -> list[ops.MigrateOperation]:
    """The unique index over `column` that becomes the primary key `key` at the contract
    (ADD CONSTRAINT ... PRIMARY KEY USING INDEX: a catalog update, no scan); until then the old
    column keeps the key. Named `index`, by default `<key>__new`; an INVALID leftover of a
    failed build first goes."""
    index = index or transitions.shadow_name(key)
    rw.lock(direction, f"create_index {index} (UNIQUE) CONCURRENTLY on {table}: {CONCURRENT}")
    return [
        Comment(f"{column}'s unique index: the primary key {key} at {at}."),
        AutocommitBlock(
            [
                Statement(transitions.invalid_index_dropped_sql(index)),
                Statement(
                    f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(index)} "
                    f"ON {quote(table)} ({quote(column)})"
                ),
            ]
        ),
    ]


def referenced_again(
    rw: Rewrite,
    direction: str,
    reference: dependents.Reference,
    column: str,
    new_column: str,
    name: str,
) -> list[ops.MigrateOperation]:
    """`reference` (a foreign key on another table) again, referencing `new_column`, named
    `name`: NOT VALID, then VALIDATE alone."""
    rw.lock(
        direction,
        f"foreign key {name} on {reference.table}: ADD ... NOT VALID takes SHARE ROW EXCLUSIVE "
        f"on both tables, briefly (a catalog update); then {VALIDATED}",
    )
    add = Statement(reference.to(column, new_column, name))
    return forms.validated(rw, direction, reference.table, name, "foreignkey", add)


def primary_key_swap_sql(table: str, key: str, index: str | None = None) -> list[str]:
    """The primary key `key` made over the unique index `index` (by default the new column's,
    `<key>__new`: primary_key_index), which takes its name: the key (if the column that held it
    has not taken it along) dropped first, in the same transaction. A catalog update: the
    index's column is NOT NULL already."""
    index = index or transitions.shadow_name(key)
    return [
        f"ALTER TABLE {quote(table)} DROP CONSTRAINT IF EXISTS {quote(key)}",
        f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(key)} PRIMARY KEY USING INDEX "
        f"{quote(index)}",
    ]


def retyped_key_indexes(
    rw: Rewrite, table: str, column: str, shadow: str, key: str
) -> list[ops.MigrateOperation]:
    """A retyped primary-key column's two unique indexes, built CONCURRENTLY before the cutover:
    the shadow's (`<key>__new`), which becomes the key at the cutover, and a spare over the old
    column (`<key>__old`), which takes it back on the way down. Each swap is then a catalog
    update, and the table is never without a unique index over the key: the spare stays on the
    kept old column until the contract drops it with the column."""
    spare = transitions.kept_name(key)
    steps = [
        *primary_key_index(rw, UPGRADE, table, shadow, key, at="the cutover"),
        *primary_key_index(rw, UPGRADE, table, column, key, spare, at="the way down"),
    ]
    rw.lock(UPGRADE, f"primary key {key}: over {shadow}'s index at the cutover, {CATALOG_ONLY}")
    rw.lock(DOWNGRADE, f"primary key {key}: back over {spare}, {CATALOG_ONLY}")
    return steps


def referenced_retype_refused(
    connection: Connection, table: str, column: str, new_type: str
) -> str | None:
    """Why the foreign keys referencing a retyped key cannot follow it, in one line naming
    them, or None: the server is asked, on empty temporary copies of the tables in a savepoint
    rolled back, whether each referencing column's type can reference `new_type` at all."""
    references = dependents.references(connection, table, column)
    incompatible = [
        f"{r.table}.{r.column}: {why}"
        for r in references
        if (why := refused_reference(connection, table, column, new_type, r)) is not None
    ]
    if not incompatible:
        return None
    named = ", ".join(f"{r.table}.{r.column} ({r.name})" for r in references)
    return (
        f"the foreign keys {named} reference it, and cannot reference {new_type} "
        f"({'; '.join(incompatible)}). Expand/contract instead, in steps: drop those foreign "
        "keys in a revision before this one, then change the type of the key and of the "
        "columns referencing it, then declare the foreign keys again"
    )


def refused_reference(
    connection: Connection,
    table: str,
    column: str,
    new_type: str,
    reference: dependents.Reference,
) -> str | None:
    """The server's refusal of `reference` referencing `column` as `new_type` (the first line
    of its message), or None. Asked of empty temporary copies of both tables, in a savepoint
    rolled back: nothing of ours is locked or changed beyond the copies' brief reads."""
    parent, made = probe_parent(table, column, new_type)
    child = transitions.identifier(f"media_db_probe_{reference.table}_child")
    return refused_by_server(
        connection,
        *made,
        f"CREATE TEMPORARY TABLE {quote(child)} (LIKE {quote(reference.table)})",
        # The column as the catalog prints it (quoted where it must be).
        f"ALTER TABLE {quote(child)} ADD FOREIGN KEY ({reference.column}) "
        f"REFERENCES {quote(parent)} ({quote(column)}) NOT VALID",
    )


def refused_referencing_type(
    connection: Connection, name: str, type_: str, table: str, column: str
) -> str | None:
    """The server's refusal of a column `name` of `type_` referencing `column` of `table` as
    it is, or None: asked as refused_reference is."""
    parent, made = probe_parent(table, column)
    child = transitions.identifier(f"media_db_probe_{table}_child")
    return refused_by_server(
        connection,
        *made,
        f"CREATE TEMPORARY TABLE {quote(child)} ({quote(name)} {type_})",
        f"ALTER TABLE {quote(child)} ADD FOREIGN KEY ({quote(name)}) "
        f"REFERENCES {quote(parent)} ({quote(column)}) NOT VALID",
    )


def probe_parent(table: str, column: str, retyped: str | None = None) -> tuple[str, list[str]]:
    """An empty temporary copy of `table` with a unique index over `column` (made `retyped`
    first, when given), for a foreign key to reference: its name and the statements that make
    it."""
    parent = transitions.identifier(f"media_db_probe_{table}")
    made = [f"CREATE TEMPORARY TABLE {quote(parent)} (LIKE {quote(table)})"]
    if retyped is not None:
        made.append(
            f"ALTER TABLE {quote(parent)} ALTER COLUMN {quote(column)} TYPE {retyped} USING NULL"
        )
    return parent, [*made, f"CREATE UNIQUE INDEX ON {quote(parent)} ({quote(column)})"]


def refused_by_server(connection: Connection, *statements: str) -> str | None:
    """The server's refusal of `statements` (its detail where it gives one: `Key columns ...
    are of incompatible types`, else its message's first line), run in a savepoint rolled back
    whatever happens, or None."""
    with connection.begin_nested() as savepoint:
        try:
            for sql in statements:
                connection.exec_driver_sql(sql)
        except DBAPIError as error:
            detail = getattr(getattr(error.orig, "diag", None), "message_detail", None)
            return str(detail or str(error.orig).splitlines()[0]).rstrip(".")
        finally:
            savepoint.rollback()
    return None


def key_moved_back_sql(
    moving: Transition, key: str, index: str, references: list[dependents.Reference]
) -> str:
    """The primary key `key` moved back from `moving.column` to the old column, over its unique
    index `index`, in one transaction: the foreign keys referencing it hold the key's index, so
    they go and come back over the old name (NOT VALID: every new row is checked at once). Only
    while the key is still on the new column: a re-run after this step drops the index it built
    again instead."""
    assert moving.old is not None
    table_ = quote(moving.table)
    on_new = (
        "EXISTS (SELECT FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
        f"AND a.attnum = c.conkey[1] WHERE c.conrelid = to_regclass({transitions.literal(table_)}) "
        f"AND c.contype = 'p' AND a.attname = {transitions.literal(moving.column)})"
    )
    moved = [
        *(reference.dropped_sql() for reference in references),
        f"ALTER TABLE {table_} DROP CONSTRAINT {quote(key)}",
        f"ALTER TABLE {table_} ADD CONSTRAINT {quote(key)} PRIMARY KEY USING INDEX {quote(index)}",
        *(reference.to(moving.old, moving.old, reference.name) for reference in references),
    ]
    return (
        f"DO $key$ BEGIN IF {on_new} THEN {'; '.join(moved)}; "
        f"ELSE DROP INDEX IF EXISTS {quote(index)}; END IF; END $key$"
    )
