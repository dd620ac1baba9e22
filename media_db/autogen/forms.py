"""The lock-safe forms the rules (media_db/autogen/rules/) and the expand/contract builders
(media_db/autogen/expand_contract.py) share: a constraint added NOT VALID then validated alone,
SET NOT NULL proven by a validated CHECK, an index built CONCURRENTLY; and small readings of an
operation."""

import copy
from typing import Any

from alembic.operations import ops
from sqlalchemy import Column, text
from sqlalchemy.sql.elements import TextClause, conv

from media_db import transitions
from media_db.autogen.locks import RERUN, VALIDATED
from media_db.autogen.ops import AutocommitBlock, Comment, Statement
from media_db.autogen.state import Rewrite


def set_not_null(
    rw: Rewrite, alter: ops.AlterColumnOp, direction: str
) -> list[ops.MigrateOperation]:
    """SET NOT NULL scans the table under ACCESS EXCLUSIVE, unless a validated CHECK (col IS
    NOT NULL) proves it (PostgreSQL 12+): validate one first, without blocking writes."""
    table, column = alter.table_name, alter.column_name
    helper = transitions.identifier(f"{table}_{column}_not_null_check")
    condition = f"{rw.quote(column)} IS NOT NULL"
    rw.waive(direction, "ban-drop-constraint")
    rw.waive(direction, "adding-not-nullable-field")
    rw.lock(
        direction,
        f"alter_column {table}.{column} SET NOT NULL: a CHECK ({condition}) is added NOT "
        f"VALID, then {VALIDATED}; SET NOT NULL then needs no scan, and the CHECK is "
        "dropped; each catalog step takes ACCESS EXCLUSIVE briefly",
    )
    return [
        *not_valid_then_validate(
            rw,
            direction,
            table,
            helper,
            "check",
            ops.CreateCheckConstraintOp(conv(helper), table, text(condition)),
        ),
        only_nullable(alter),
        ops.DropConstraintOp(conv(helper), table, type_="check"),
    ]


def not_valid_then_validate(
    rw: Rewrite,
    direction: str,
    table: str,
    name: str,
    type_: str,
    add: ops.CreateCheckConstraintOp | ops.CreateForeignKeyOp,
) -> list[ops.MigrateOperation]:
    """ADD ... NOT VALID (a leftover of a failed run dropped first), then VALIDATE alone."""
    add = copy.copy(add)
    add.kw = {**add.kw, "postgresql_not_valid": True}
    return validated(rw, direction, table, name, type_, add)


def validated(
    rw: Rewrite, direction: str, table: str, name: str, type_: str, add: ops.MigrateOperation
) -> list[ops.MigrateOperation]:
    """`add`, which adds the constraint `name` NOT VALID, then VALIDATE alone."""
    rw.waive(direction, "ban-drop-constraint")
    return [
        Comment(f"Drop {RERUN}."),
        ops.DropConstraintOp(conv(name), table, type_=type_, if_exists=True),
        add,
        Comment("VALIDATE in a transaction of its own: it scans without blocking writes."),
        AutocommitBlock(
            [Statement(f"ALTER TABLE {rw.quote(table)} VALIDATE CONSTRAINT {rw.quote(name)}")]
        ),
    ]


def deferrable(options: dict[str, Any]) -> str:
    """The DEFERRABLE / INITIALLY clauses of a constraint's options."""
    clause = ""
    if options.get("deferrable") is not None:
        clause += " DEFERRABLE" if options["deferrable"] else " NOT DEFERRABLE"
    if options.get("initially"):
        clause += f" INITIALLY {options['initially']}"
    return clause


def concurrent(create: ops.CreateIndexOp) -> ops.CreateIndexOp:
    create = copy.copy(create)
    create.kw = {**create.kw, "postgresql_concurrently": True}
    create.if_not_exists = True
    return create


def only_nullable(alter: ops.AlterColumnOp) -> ops.AlterColumnOp:
    only = copy.copy(alter)
    only.modify_type = None
    only.modify_server_default = False
    only.modify_comment = False
    if alter.modify_type is not None:
        only.existing_type = alter.modify_type
    if alter.modify_server_default is not False:
        only.existing_server_default = alter.modify_server_default
    return only


def modifies_anything(alter: ops.AlterColumnOp) -> bool:
    return (
        alter.modify_type is not None
        or alter.modify_server_default is not False
        or alter.modify_comment is not False
        or alter.modify_nullable is not None
    )


def default_sql(column: Column[Any]) -> str | None:
    default = column.server_default
    if default is None:
        return None
    argument = getattr(default, "arg", None)
    return argument.text if isinstance(argument, TextClause) else repr(argument)
