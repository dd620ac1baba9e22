"""Rules for indexes and constraints: indexes built and dropped CONCURRENTLY, CHECKs and
foreign keys added NOT VALID then validated alone (media_db/autogen/forms.py), UNIQUE through an
index built CONCURRENTLY. Each step that commits on its own drops a leftover of a failed earlier
run first."""

import copy

from alembic.operations import ops
from sqlalchemy.sql.elements import conv

from media_db import dependents, transitions
from media_db.autogen import forms
from media_db.autogen.locks import (
    CATALOG_ONLY,
    CONCURRENT,
    RERUN,
    VALIDATED,
)
from media_db.autogen.ops import AutocommitBlock, Comment, Statement
from media_db.autogen.rules import (
    rewrites,
)
from media_db.autogen.state import DOWNGRADE, UPGRADE, Rewrite


@rewrites(ops.CreateIndexOp)
def create_index(
    rw: Rewrite, create: ops.CreateIndexOp, direction: str
) -> list[ops.MigrateOperation]:
    name = str(create.index_name)
    if name in rw.kept_indexes and rw.kept_indexes[name].kind == dependents.INDEX:
        return renamed_columns_index(rw, create, direction)
    if direction == UPGRADE and name in rw.kept_indexes:
        rw.refusals.append(taken(name, create.table_name))
        return [create]
    if direction == DOWNGRADE and name in rw.gone_with_columns:
        return []  # the contract's way down builds it again with its column
    rw.lock(
        direction,
        f"create_index {create.index_name} CONCURRENTLY on {create.table_name}: {CONCURRENT} "
        "(an INVALID leftover of a failed build is dropped first)",
    )
    return [AutocommitBlock([forms.concurrent(create)])]


@rewrites(ops.DropIndexOp)
def drop_index(rw: Rewrite, drop: ops.DropIndexOp, direction: str) -> list[ops.MigrateOperation]:
    if direction == UPGRADE and str(drop.index_name) in rw.gone_with_columns:
        return []  # dropped with its column, by the contract
    if direction == UPGRADE and str(drop.index_name) in rw.kept_indexes:
        return []  # kept on the renamed column's old name (renamed_columns_index)
    rw.lock(
        direction,
        f"drop_index {drop.index_name} CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and "
        "writes continue",
    )
    drop = copy.copy(drop)
    drop.kw = {**drop.kw, "postgresql_concurrently": True}
    drop.if_exists = True
    return [AutocommitBlock([drop])]


@rewrites(ops.CreateUniqueConstraintOp)
def add_unique(
    rw: Rewrite, add: ops.CreateUniqueConstraintOp, direction: str
) -> list[ops.MigrateOperation]:
    table, name = add.table_name, str(add.constraint_name)
    if name in rw.kept_indexes and rw.kept_indexes[name].kind == dependents.UNIQUE:
        return renamed_columns_unique(rw, add, direction)
    if direction == DOWNGRADE and name in rw.gone_with_columns:
        return []  # the contract's way down makes it again with its column
    rw.waive(direction, "ban-drop-constraint")
    rw.lock(
        direction,
        f"unique constraint {name} on {table}: its index is built CONCURRENTLY under "
        f"{CONCURRENT}; then ADD CONSTRAINT ... USING INDEX takes {CATALOG_ONLY}",
    )
    index = ops.CreateIndexOp(conv(name), table, list(add.columns), unique=True, schema=add.schema)
    return [
        Comment(f"Drop {RERUN}."),
        ops.DropConstraintOp(add.constraint_name, table, type_="unique", if_exists=True),
        AutocommitBlock([forms.concurrent(index)]),
        Statement(
            f"ALTER TABLE {rw.quote(table)} ADD CONSTRAINT {rw.quote(name)} "
            f"UNIQUE USING INDEX {rw.quote(name)}{forms.deferrable(add.kw)}"
        ),
    ]


@rewrites(ops.CreateCheckConstraintOp)
def add_check(
    rw: Rewrite, add: ops.CreateCheckConstraintOp, direction: str
) -> list[ops.MigrateOperation]:
    table, name = add.table_name, str(add.constraint_name)
    if direction == DOWNGRADE and name in rw.gone_with_columns:
        return []  # the contract's way down adds it again with its column
    rw.lock(
        direction,
        f"check constraint {name} on {table}: ADD ... NOT VALID takes {CATALOG_ONLY}; "
        f"then {VALIDATED}",
    )
    return forms.not_valid_then_validate(rw, direction, table, name, "check", add)


@rewrites(ops.CreateForeignKeyOp)
def add_foreign_key(
    rw: Rewrite, add: ops.CreateForeignKeyOp, direction: str
) -> list[ops.MigrateOperation]:
    table, name = add.source_table, str(add.constraint_name)
    if direction == DOWNGRADE and name in rw.gone_with_columns:
        return []  # the contract's way down adds it again with its column
    if name in rw.moving_references:
        return []  # it follows a renamed key: the rename's own steps
    rw.lock(
        direction,
        f"foreign key {name} on {table}: ADD ... NOT VALID takes SHARE ROW EXCLUSIVE on "
        f"{table} and {add.referent_table}, briefly (a catalog update); then {VALIDATED}",
    )
    return forms.not_valid_then_validate(rw, direction, table, name, "foreignkey", add)


@rewrites(ops.DropConstraintOp)
def drop_constraint(
    rw: Rewrite, drop: ops.DropConstraintOp, direction: str
) -> list[ops.MigrateOperation]:
    name = str(drop.constraint_name)
    if direction == UPGRADE and name in rw.gone_with_columns:
        return []  # dropped with its column, by the contract
    if direction == UPGRADE and name in rw.kept_indexes:
        return []  # kept on the renamed column's old name (renamed_columns_unique)
    if name in rw.moving_references:
        return []  # it follows a renamed key: the rename's own steps
    rw.waive(direction, "ban-drop-constraint")
    also = " (and on the referenced table)" if drop.constraint_type == "foreignkey" else ""
    rw.lock(direction, f"drop_constraint {name} on {drop.table_name}: {CATALOG_ONLY}{also}")
    return [drop]


def renamed_columns_index(
    rw: Rewrite, create: ops.CreateIndexOp, direction: str
) -> list[ops.MigrateOperation]:
    """An index the models move from a renamed column's old name to its new one, keeping its
    name: built CONCURRENTLY beside the old one under a temporary name, then the two swap names
    in one catalog step, so there is never a window without it. The old column's keeps serving
    old readers as `<name>__old` until the contract drops it with its column. The way down
    drops the new column's and gives the old one its name back."""
    table, name = create.table_name, str(create.index_name)
    index, old = rw.quote(name), rw.quote(transitions.kept_name(name))
    if direction == DOWNGRADE:
        rw.lock(
            direction, f"alter index {transitions.kept_name(name)} rename to {name}: {CATALOG_ONLY}"
        )
        return [Statement(f"ALTER INDEX IF EXISTS {old} RENAME TO {index}")]
    shadow = transitions.shadow_name(name)
    build = copy.copy(create)
    build.index_name = conv(shadow)
    rw.lock(
        direction,
        f"create_index {name} on {table}: built CONCURRENTLY as {shadow} under {CONCURRENT}; "
        f"then it takes the name, the old column's becoming {transitions.kept_name(name)}: "
        f"{CATALOG_ONLY}",
    )
    swap = (
        f"DO $swap$ BEGIN IF to_regclass({transitions.literal(old)}) IS NULL THEN "
        f"ALTER INDEX {index} RENAME TO {old}; "
        f"ALTER INDEX {rw.quote(shadow)} RENAME TO {index}; "
        # A re-run after the swap built the shadow again: it is not needed.
        f"ELSE DROP INDEX IF EXISTS {rw.quote(shadow)}; END IF; END $swap$"
    )
    return [AutocommitBlock([forms.concurrent(build)]), Statement(swap)]


def renamed_columns_unique(
    rw: Rewrite, add: ops.CreateUniqueConstraintOp, direction: str
) -> list[ops.MigrateOperation]:
    """A UNIQUE constraint the models move from a renamed column's old name to its new one,
    keeping its name: its index is built CONCURRENTLY beside the old one's under a temporary
    name, then, in one catalog step, the old constraint becomes `<name>__old` and the index
    becomes the constraint; the old one serves old writers until the contract drops it with
    its column. The way down drops the new one and gives the old one its name back."""
    table, name = add.table_name, str(add.constraint_name)
    constraint, old = rw.quote(name), rw.quote(transitions.kept_name(name))
    table_ = rw.quote(table)
    rw.waive(direction, "ban-drop-constraint")
    if direction == DOWNGRADE:
        rw.lock(
            direction, f"rename constraint {transitions.kept_name(name)} to {name}: {CATALOG_ONLY}"
        )
        return [
            Statement(
                "DO $unique$ BEGIN IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = "
                f"to_regclass({transitions.literal(table_)}) AND conname = "
                f"{transitions.literal(transitions.kept_name(name))}) THEN "
                f"ALTER TABLE {table_} RENAME CONSTRAINT {old} TO {constraint}; "
                "END IF; END $unique$"
            )
        ]
    shadow = transitions.shadow_name(name)
    index = ops.CreateIndexOp(
        conv(shadow), table, list(add.columns), unique=True, schema=add.schema
    )
    rw.lock(
        direction,
        f"unique constraint {name} on {table}: its index is built CONCURRENTLY as {shadow} "
        f"under {CONCURRENT}; then the old one becomes {transitions.kept_name(name)} and the "
        f"index the constraint: {CATALOG_ONLY}",
    )
    swap = (
        "DO $swap$ BEGIN IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = "
        f"to_regclass({transitions.literal(table_)}) AND conname = "
        f"{transitions.literal(transitions.kept_name(name))}) THEN "
        f"ALTER TABLE {table_} RENAME CONSTRAINT {constraint} TO {old}; "
        f"ALTER TABLE {table_} ADD CONSTRAINT {constraint} UNIQUE USING INDEX "
        f"{rw.quote(shadow)}{forms.deferrable(add.kw)}; "
        # A re-run after the swap built the index again: it is not needed.
        f"ELSE DROP INDEX IF EXISTS {rw.quote(shadow)}; END IF; END $swap$"
    )
    return [AutocommitBlock([forms.concurrent(index)]), Statement(swap)]


def taken(name: str, table: str) -> str:
    """Why an index cannot take the name of a UNIQUE constraint a rename's old column keeps."""
    return (
        f"{name} on {table}: a UNIQUE constraint of that name stays on the renamed column's "
        "old name until the contract, and an index cannot take it over. Name the index "
        "otherwise (the naming convention's <table>_<column>_idx does)"
    )
