"""Rules for columns: add, drop and alter. What has no lock-safe form in one step is handed
to media_db/autogen/expand_contract.py (marked in the models) or refused, naming the marker."""

import copy
import re

from alembic.operations import ops

from media_db import dependents, transitions
from media_db.autogen import expand_contract, forms
from media_db.autogen.locks import (
    CATALOG_ONLY,
    CONCURRENT,
    GUARDED_DROP,
)
from media_db.autogen.ops import AutocommitBlock, Statement
from media_db.autogen.pg_types import binary_compatible, sql_type
from media_db.autogen.rules import (
    rewrites,
)
from media_db.autogen.state import DOWNGRADE, UPGRADE, Rewrite, Undoable
from media_db.transitions import RENAME


@rewrites(ops.AddColumnOp)
def add_column(
    rw: Rewrite, add: ops.AddColumnOp, direction: str
) -> Undoable | list[ops.MigrateOperation]:
    column, where = add.column, f"{add.table_name}.{add.column.name}"
    default = forms.default_sql(column)
    generated = column.computed is not None or column.identity is not None
    volatile = rw.volatile_functions(default) if default is not None else []
    marker = transitions.marker(column)
    if direction == UPGRADE and not generated:
        if marker is not None and marker[0] == RENAME:
            return expand_contract.expand_rename(rw, add, marker[1])
        if marker is not None and transitions.USING in column.info:  # and no renamed_from
            rw.refusals.append(
                f"add_column {where}: info {transitions.USING!r} marks a type change of a "
                f"column the table has, and {column.name} is new to it. Expand/contract "
                f"instead: to rename a column, give info={{{transitions.RENAMED_FROM!r}: "
                f"'<its name now>'}} beside {transitions.USING!r}; to fill a new column from "
                f"the row, info={{{transitions.BACKFILL!r}: '<SQL expression over the row>'}}"
            )
            return [add]
        if marker is not None:
            return expand_contract.expand_backfill(rw, add, marker[1])
        if volatile:
            assert default is not None
            return expand_contract.expand_volatile(rw, add, default)
    problem = None
    if generated:
        problem = "a generated or identity column fills every existing row: a table rewrite"
    elif volatile:
        problem = (
            f"its default calls {', '.join(volatile)} (volatile): PostgreSQL computes it for "
            "every existing row, rewriting the table under ACCESS EXCLUSIVE"
        )
    elif not column.nullable and default is None:
        problem = "NOT NULL with no server default: existing rows have no value to hold"
    if problem and direction == UPGRADE:
        how = (
            f"mark the column with info={{{transitions.BACKFILL!r}: "
            "'<SQL expression over the row>'}: make revision then writes an expand that "
            "fills it for existing rows and for writers that leave it out"
            if not generated
            else "add it nullable, backfill existing rows in batches, then set NOT NULL in "
            "a later `make revision`"
        )
        rw.refusals.append(f"add_column {where}: {problem}. Expand/contract instead: {how}.")
    how = f"a rewrite: {problem}" if problem else CATALOG_ONLY
    rw.lock(direction, f"add_column {where}: {how}")
    # A later step of the revision may commit on its own (an autocommit block) and then fail:
    # the column is already there when the revision runs again.
    add = copy.copy(add)
    add.if_not_exists = True
    return [add]


@rewrites(ops.DropColumnOp)
def drop_column(
    rw: Rewrite, drop: ops.DropColumnOp, direction: str
) -> Undoable | list[ops.MigrateOperation]:
    where = f"{drop.table_name}.{drop.column_name}"
    renamed = [
        moving
        for moving in rw.in_flight.values()
        if (moving.table, moving.old) == (drop.table_name, drop.column_name)
    ]
    if direction == UPGRADE and renamed:
        return expand_contract.contract_old_column(rw, renamed[0])
    rw.drop(direction, "columns", where, "ban-drop-column")
    rw.lock(direction, f"drop_column {where}: {GUARDED_DROP}")
    return [drop]


def refuse_renames(rw: Rewrite, table_ops: ops.ModifyTableOps) -> None:
    added = {
        step.column.name: sql_type(step.column.type)
        for step in table_ops.ops
        if isinstance(step, ops.AddColumnOp)
    }
    dropped = [step.column_name for step in table_ops.ops if isinstance(step, ops.DropColumnOp)]
    if not (added and dropped):
        return
    existing = {
        column["name"]: sql_type(column["type"])
        for column in rw.reflected_columns(table_ops.table_name)
    }
    for old in dropped:
        for new, type_ in added.items():
            if existing.get(old) == type_:
                rw.refusals.append(
                    f"{table_ops.table_name}: {old} dropped and {new} added, both {type_}: "
                    f"autogenerate sees a rename as a drop and an add, which loses {old}'s "
                    f"data. Expand/contract instead: mark {new} with info="
                    f"{{{transitions.RENAMED_FROM!r}: {old!r}}} and make revision writes "
                    "the expand (both names kept in step), then the contract once you "
                    "remove the marker. Unrelated columns: drop and add in two revisions."
                )


@rewrites(ops.AlterColumnOp)
def alter_column(
    rw: Rewrite, alter: ops.AlterColumnOp, direction: str
) -> Undoable | list[ops.MigrateOperation]:
    where = f"{alter.table_name}.{alter.column_name}"
    if direction == UPGRADE and alter.modify_type is not None:
        old, new = sql_type(alter.existing_type), sql_type(alter.modify_type)
        if not binary_compatible(old, new):
            return expand_contract.expand_retype(rw, alter, old, new)
    written: list[ops.MigrateOperation] = []
    rest = copy.copy(alter)
    rest.modify_nullable = None
    if alter.modify_type is not None:
        old, new = sql_type(alter.existing_type), sql_type(alter.modify_type)
        if binary_compatible(old, new):
            how = f"{old} to {new} is binary-compatible; {CATALOG_ONLY}"
            rw.waive(direction, "changing-column-type")
        else:
            how = (
                "ACCESS EXCLUSIVE while the table is checked and rewritten (undoing a "
                "widening); fails, changing nothing, if a value no longer fits"
            )
            rw.waive(direction, "changing-column-type")
        rw.lock(direction, f"alter_column {where} type: {how}")
    if alter.modify_server_default is not False:
        rw.lock(direction, f"alter_column {where} server default: {CATALOG_ONLY}")
    if alter.modify_comment is not False:
        rw.lock(direction, f"alter_column {where} comment: {CATALOG_ONLY}")
    if forms.modifies_anything(rest):
        written.append(rest)
    if direction == DOWNGRADE and alter.modify_type is not None:
        written += expression_indexes_rebuilt(rw, alter.table_name, alter.column_name)
    if alter.modify_nullable is True:
        rw.waive(direction, "ban-drop-not-null")
        written.append(forms.only_nullable(alter))
        rw.lock(direction, f"alter_column {where} DROP NOT NULL: {CATALOG_ONLY}")
    elif alter.modify_nullable is False:
        marked = rw.marker(alter.table_name, alter.column_name)
        if direction == UPGRADE and marked is not None and marked[0] == transitions.FILL:
            filled = expand_contract.expand_existing_backfill(rw, alter, marked[1])
            return filled._replace(steps=written + filled.steps)
        written += forms.set_not_null(rw, alter, direction)
    return written


def expression_indexes_rebuilt(rw: Rewrite, table: str, column: str) -> list[ops.MigrateOperation]:
    """An in-place type change makes PostgreSQL parse again each index expression over the
    column: on the way back, one mixing two types keeps a cast a fresh build has not
    (`COALESCE(limit_key, (workflow_type)::character varying)`). Each is built again as it was
    before the upgrade (the catalog as `make revision` reads it), CONCURRENTLY under a
    temporary name that then takes the name."""
    steps: list[ops.MigrateOperation] = []
    for index in dependents.dependents(rw.connection, table, column):
        method = index.definition.partition(" USING ")[2]
        if index.kind != dependents.INDEX or not re.search(r"\w\(", method):
            continue  # plain columns: nothing to parse again
        shadow = transitions.shadow_name(index.name)
        rw.lock(DOWNGRADE, f"index {index.name} built again CONCURRENTLY: {CONCURRENT}")
        steps += [
            AutocommitBlock(
                [
                    Statement(transitions.invalid_index_dropped_sql(shadow)),
                    Statement(index.over(table, column, column, shadow)),
                    Statement(f"DROP INDEX CONCURRENTLY IF EXISTS {rw.quote(index.name)}"),
                ]
            ),
            Statement(f"ALTER INDEX {rw.quote(shadow)} RENAME TO {rw.quote(index.name)}"),
        ]
    return steps
