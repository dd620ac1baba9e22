"""Rules for indexes and constraints: indexes built and dropped CONCURRENTLY, CHECKs and
foreign keys added NOT VALID then validated alone (media_db/autogen/forms.py), UNIQUE through an
index built CONCURRENTLY. Each step that commits on its own drops a leftover of a failed earlier
run first."""

import copy

from alembic.operations import ops
from sqlalchemy.sql.elements import conv

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
    if name in rw.carried:
        return []  # carried to the renamed column by its expand (autogen/carried.py)
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
    if str(drop.index_name) in rw.carried or (
        direction == UPGRADE and str(drop.index_name) in rw.kept_indexes
    ):
        return []  # kept on the renamed column's old name, or carried to the new one
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
    if name in rw.carried:
        return []  # carried to the renamed column by its expand (autogen/carried.py)
    if direction == UPGRADE and name in rw.kept_indexes:
        rw.refusals.append(taken(name, table))
        return [add]
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
    if name in rw.carried or (direction == UPGRADE and name in rw.kept_indexes):
        return []  # kept on the renamed column's old name, or carried to the new one
    if name in rw.moving_references:
        return []  # it follows a renamed key: the rename's own steps
    rw.waive(direction, "ban-drop-constraint")
    also = " (and on the referenced table)" if drop.constraint_type == "foreignkey" else ""
    rw.lock(direction, f"drop_constraint {name} on {drop.table_name}: {CATALOG_ONLY}{also}")
    # A later step may commit on its own and then fail: the constraint is gone on the re-run.
    drop = copy.copy(drop)
    drop.if_exists = True
    return [drop]


def taken(name: str, table: str) -> str:
    """Why an index or constraint cannot take a name a rename's old column keeps."""
    return (
        f"{name} on {table}: an index or UNIQUE constraint of that name stays on the renamed "
        "column's old name until the contract, and another kind cannot take it over. Name it "
        "otherwise (the naming convention's <table>_<column>_idx or _key does)"
    )
