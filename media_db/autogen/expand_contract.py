"""Expand/contract, as `make revision` writes it (the transitions themselves, and what a deploy
reads of them, are media_db/transitions.py): the expand of a rename (its type changed too, or
not), of a NOT NULL column with a backfill (new, or existing and nullable), of a volatile
default and of a rewriting type change (its indexes, CHECKs and UNIQUE constraints carried,
media_db/dependents.py, and a one-column primary key, through unique indexes built beside it:
retyped_key_indexes, with the foreign keys referencing it; its way down re-runs from any
point it is cut at, transitions.while_column_sql), and each one's contract. Each
builder returns the upgrade's steps with the downgrade's that undo them (`Undoable`): the walk
(media_db/autogen/rewriter.py) writes those for the same column on the way down.
"""

from typing import Any

from alembic.operations import ops
from alembic_utils.pg_function import PGFunction
from alembic_utils.reversible_op import DropOp, ReplaceOp
from sqlalchemy import Column, UniqueConstraint

from media_db import dependents, transitions
from media_db.autogen import forms
from media_db.autogen.carried import (
    built,
    carried,
    declared_sql,
    names_the_old_column,
    refused_by_new_type,
    refused_carries,
    uncarried,
)
from media_db.autogen.guards import guard_index, lossless_drop
from media_db.autogen.keys import (
    key_moved_back_sql,
    moves_primary_key,
    primary_key_index,
    primary_key_swap_sql,
    referenced_again,
    referenced_retype_refused,
    refused_by_server,
    refused_foreign_keys,
    retyped_key_indexes,
)
from media_db.autogen.locks import (
    BATCHES,
    CATALOG_ONLY,
    RENAMING,
    SYNC_DROP,
    SYNC_TRIGGER,
    TRIGGER_LOCKS,
    VALIDATED,
)
from media_db.autogen.ops import AutocommitBlock, Backfill, Comment, Statement
from media_db.autogen.pg_types import exact_round_trip, sql_type
from media_db.autogen.state import DOWNGRADE, UPGRADE, Rewrite, Undoable
from media_db.models.triggers import ENTITIES
from media_db.transitions import RENAME, RETYPE, Transition, quote


def keep_until_contract(rw: Rewrite, table: str, new: str, old: str) -> None:
    """A rename's old column keeps its indexes, UNIQUE constraints and foreign keys until the
    contract (the new column's are built beside them, so there is never a window without one):
    an index or UNIQUE constraint the models keep under its name is carried to the new column,
    and so is every CHECK (`carried`); autogenerate's own steps for those are left out. A
    primary key the models move to the new column follows it (moves_primary_key); a foreign
    key referencing it, a view or a trigger on it cannot follow the rename yet, and is
    refused."""
    depending = dependents.dependents(rw.connection, table, old)
    rw.kept_indexes |= {
        d.name: d for d in depending if d.kind in (dependents.INDEX, dependents.UNIQUE)
    }
    # Carried where the models keep the name for the same kind of object; an index taking a
    # UNIQUE constraint's name, or the reverse, is refused (rules.constraints.taken).
    declared = rw.metadata.tables.get(table)
    by_kind: dict[str, set[str]] = {dependents.INDEX: set(), dependents.UNIQUE: set()}
    if declared is not None:
        by_kind[dependents.INDEX] = {str(index.name) for index in declared.indexes}
        by_kind[dependents.UNIQUE] = {
            str(c.name) for c in declared.constraints if isinstance(c, UniqueConstraint)
        }
    rw.carried |= {n for n, d in rw.kept_indexes.items() if n in by_kind[d.kind]}
    keys = [d for d in depending if moves_primary_key(rw, d, table, new)]
    blocking = [
        d
        for d in depending
        if d.kind not in dependents.RENAME_KEEPS
        and d not in keys
        and not (keys and d.kind == dependents.REFERENCING)  # they follow the key
    ]
    if keys:
        references = dependents.references(rw.connection, table, old)
        rw.moving_references |= {r.name for r in references}
        rw.moving_references |= {transitions.shadow_name(r.name) for r in references}
        marked = transitions.marked(rw.metadata)
        for reference in references:
            renamed = [
                f"{child}.{value}"
                for (child, _), (kind, value) in marked.items()
                if child == reference.table and kind == RENAME and value == reference.column
            ]
            if renamed:
                rw.refusals.append(
                    f"add_column {table}.{new} (renamed from {old}) and {renamed[0]}, which "
                    f"references it, are renamed together: rename one in this revision and "
                    "the other in the next"
                )
    if refused := uncarried(rw, blocking):
        rw.refusals.append(
            f"add_column {table}.{new} (renamed from {old}): {refused}. Rename it by "
            "hand, or move them to a column of their own first"
        )


def goes_with_its_column(rw: Rewrite, table: str, column: str) -> None:
    """When `column` is the old column of a transition in flight, what depends on it goes with
    it at the contract: autogenerate's separate drops of those (and their re-creation on the
    way down) are not written."""
    if any((moving.table, moving.old) == (table, column) for moving in rw.in_flight.values()):
        depending = dependents.dependents(rw.connection, table, column)
        rw.gone_with_columns |= {d.name for d in depending}
        # A renamed primary key's unique index becomes the key (contract_old_column), and the
        # way down builds it again.
        rw.gone_with_columns |= {
            transitions.shadow_name(d.name) for d in depending if d.kind == dependents.PRIMARY_KEY
        }
        # The foreign keys referencing it, and their copies over the new name, follow the key.
        referencing = [d.name for d in depending if d.kind == dependents.REFERENCING]
        rw.moving_references |= {*referencing, *map(transitions.shadow_name, referencing)}


def expand_rename(
    rw: Rewrite, add: ops.AddColumnOp, old: str
) -> Undoable | list[ops.MigrateOperation]:
    table, new = add.table_name, add.column
    where = f"add_column {table}.{new.name} (renamed from {old})"
    was = {column["name"]: column for column in rw.reflected_columns(table)}.get(old)
    if was is None:
        rw.refusals.append(f"{where}: {table} has no column {old}")
        return [add]
    # Its type changed too: the trigger converts each write (`using` one way, `down` the other)
    # and old writers keep their column, name and type, until the contract.
    old_type, new_type = sql_type(was["type"]), sql_type(new.type)
    retyped = (
        conversion(rw, where, new, (old, old_type), (new.name, new_type))
        if old_type != new_type
        else None
    )
    if old_type != new_type and retyped is None:
        return [add]
    if retyped and (refused := refused_foreign_keys(rw, table, new.name, new_type)):
        rw.refusals.append(f"{where}: {refused}")
        return [add]
    old_default, new_default = was["default"], forms.default_sql(new)
    # Defaults the trigger can compare with (none volatile) stay on both columns; otherwise
    # the old one's would hide what a writer of the new name gave, and goes for the transition.
    shared = (
        old_default is not None
        and new_default is not None
        and not rw.volatile_functions(f"{old_default} {new_default}")
    )
    moving = Transition(
        RENAME,
        table,
        new.name,
        f"({retyped[0]})" if retyped else quote(old),
        old,
        rw.revision,
        back=retyped[1] if retyped else None,
        default=new_default if shared else None,
        old_default=old_default if shared else None,
        new_defaulted=new_default is not None,
    )
    steps: list[ops.MigrateOperation] = [
        Comment(
            f"Expand: {old} is renamed to {new.name}. Writers of either name keep working: "
            f"the trigger {moving.name} copies every write to the other column"
            + (f" ({new_type}: {retyped[0]}; back: {retyped[1]})." if retyped else ".")
        )
    ]
    if old_default is not None and not shared:
        steps.append(
            Statement(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(old)} DROP DEFAULT")
        )
    steps += added_for_fill(rw, moving, add, forms.default_sql(new))
    rw.lock(UPGRADE, f"{where}, with the sync trigger {moving.name}: {SYNC_TRIGGER}")
    steps += fill(rw, moving, new.type, not new.nullable, UPGRADE)
    carry = [
        d
        for d in dependents.dependents(rw.connection, table, old)
        if d.kind == dependents.CHECK or d.name in rw.carried
    ]
    rw.refusals += refused_carries(rw, where, table, carry)
    if retyped and (refused := refused_by_new_type(rw, table, old, new_type, carry, new.name)):
        rw.refusals.append(f"{where}: {refused}")
    for dependent in carry:
        if stale := names_the_old_column(rw, table, dependent, old, new.name):
            rw.refusals.append(f"{where}: {stale}")
        steps += carried(rw, dependent, table, old, new.name)
    references: list[dependents.Reference] = []
    for key in dependents.dependents(rw.connection, table, old):
        if not moves_primary_key(rw, key, table, new.name):
            continue
        if retyped:  # the key moves with a rename, or with a type change: one at a time
            rw.refusals.append(
                f"{where}: the primary key {key.name} moves with a rename or with a type "
                "change, not both at once: rename it with its type as it is, then change its "
                "type in a later revision (make revision carries a primary key's type change)"
            )
        else:
            steps += primary_key_index(rw, UPGRADE, table, new.name, key.name)
            references = dependents.references(rw.connection, table, old)
    for reference in references:  # each foreign key, again over the new name
        name = transitions.shadow_name(reference.name)
        steps += referenced_again(rw, UPGRADE, reference, old, new.name, name)
    restore = (
        [
            Statement(
                f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(old)} SET DEFAULT {old_default}"
            )
        ]
        if old_default is not None and not shared
        else []
    )
    index, flat = guard_index(
        rw, moving, new.name, moving.source, DOWNGRADE, added={new.name: new_type}
    )
    undo = [
        *index,
        Comment(f"{old} holds every value (the trigger copied each write): nothing is lost."),
        # The foreign keys over the new name first: they hold its unique index.
        *(Statement(r.dropped_sql(transitions.shadow_name(r.name))) for r in references),
        *lossless_drop(rw, moving, new.name, flat or moving.source, DOWNGRADE, indexed=bool(flat)),
        # The new column's copies went with it: the old ones take their names back.
        *(Statement(d.renamed_sql(table, transitions.kept_name(d.name), d.name)) for d in carry),
        *restore,
    ]
    return Undoable(steps, undo)


def refused_backfill(rw: Rewrite, where: str, table: str, expression: str) -> str | None:
    """Why a backfill expression cannot be computed from the row its trigger sees, or None:
    asked on an empty temporary copy of the table without the columns a rename moves (in
    flight, or in this revision): a column not there yet fails the backfill half-way with its
    trigger live, and a rename's sync trigger may copy a writer's value to the other name only
    after the backfill's has run (triggers run in name order)."""
    probe = transitions.identifier(f"media_db_probe_{table}")
    renamed = {
        name
        for flight in rw.in_flight.values()
        if (flight.table, flight.kind) == (table, RENAME)
        for name in (flight.column, flight.old or flight.column)
    }
    renamed |= {
        name
        for (marked_table, column), (kind, old) in transitions.marked(rw.metadata).items()
        if (marked_table, kind) == (table, RENAME)
        for name in (column, old)
    }
    why = refused_by_server(
        rw.connection,
        f"CREATE TEMPORARY TABLE {quote(probe)} (LIKE {quote(table)})",
        *(f"ALTER TABLE {quote(probe)} DROP COLUMN IF EXISTS {quote(c)}" for c in sorted(renamed)),
        f"SELECT ({expression}) FROM {quote(probe)}",
    )
    if why is None:
        return None
    return (
        f"{where}: its backfill {expression!r} fails on the row ({why}): name only columns the "
        "table has before this revision and no rename moves (in flight or in this revision: "
        "its sync trigger may run after the backfill's), then run make revision again"
    )


def expand_backfill(
    rw: Rewrite, add: ops.AddColumnOp, expression: str
) -> Undoable | list[ops.MigrateOperation]:
    table, column = add.table_name, add.column
    where = f"add_column {table}.{column.name}"
    if forms.default_sql(column) is not None:
        rw.refusals.append(
            f"{where}: info {transitions.BACKFILL!r} and a server default: the default "
            "already fills existing rows; keep one of them"
        )
        return [add]
    if refused := refused_backfill(rw, where, table, expression):
        rw.refusals.append(refused)
    moving = Transition(transitions.FILL, table, column.name, f"({expression})", None, rw.revision)
    steps: list[ops.MigrateOperation] = [
        Comment(
            f"Expand: {column.name} is added nullable; the trigger {moving.name} fills it "
            f"from {expression} when a writer leaves it NULL: old writers keep working."
        ),
        *added_for_fill(rw, moving, add, None),
    ]
    rw.lock(UPGRADE, f"{where}, with the sync trigger {moving.name}: {SYNC_TRIGGER}")
    steps += fill(rw, moving, column.type, not column.nullable, UPGRADE)
    added = {column.name: sql_type(column.type)}
    index, flat = guard_index(rw, moving, column.name, moving.source, DOWNGRADE, added=added)
    return Undoable(
        steps,
        [
            *index,
            Comment(f"Every {column.name} is what {expression} gives back: nothing is lost."),
            *lossless_drop(
                rw, moving, column.name, flat or moving.source, DOWNGRADE, indexed=bool(flat)
            ),
        ],
    )


def expand_existing_backfill(rw: Rewrite, alter: ops.AlterColumnOp, expression: str) -> Undoable:
    """An existing nullable column becoming NOT NULL, marked with a backfill: the sync
    trigger fills what a writer leaves NULL (old inserts keep working), the rows are
    backfilled in batches, then NOT NULL through the validated CHECK. The way down drops
    NOT NULL and the trigger; the values filled in stay."""
    table, column = alter.table_name, alter.column_name
    where = f"alter_column {table}.{column} SET NOT NULL"
    if refused := refused_backfill(rw, where, table, expression):
        rw.refusals.append(refused)
    moving = Transition(transitions.FILL, table, column, f"({expression})", None, rw.revision)
    rw.lock(
        UPGRADE,
        f"sync trigger {moving.name} on {table}.{column} (fills a NULL from "
        f"{expression}): {TRIGGER_LOCKS[ReplaceOp].format(table=table)}",
    )
    rw.waive(DOWNGRADE, "ban-drop-function", SYNC_DROP)
    rw.lock(
        DOWNGRADE,
        f"drop the sync trigger {moving.name}: {TRIGGER_LOCKS[DropOp].format(table=table)}",
    )
    steps: list[ops.MigrateOperation] = [
        Comment(
            f"Expand: {column} becomes NOT NULL. The trigger {moving.name} fills it from "
            f"{expression} when a writer leaves it NULL, so old writers keep working; "
            "existing rows are filled in batches first."
        ),
        *(Statement(sql) for sql in moving.create_sql()),
        *fill(rw, moving, alter.existing_type, True, UPGRADE),
    ]
    # The way down drops the trigger, then its alter_column drops NOT NULL.
    return Undoable(steps, [Statement(sql) for sql in moving.drop_sql()], then_its_own=True)


def expand_volatile(rw: Rewrite, add: ops.AddColumnOp, default: str) -> list[ops.MigrateOperation]:
    table, column = add.table_name, add.column
    moving = Transition(transitions.FILL, table, column.name, default)
    rw.lock(
        UPGRADE,
        f"add_column {table}.{column.name} with no default, then SET DEFAULT {default} "
        f"(new rows only): {CATALOG_ONLY}",
    )
    return [
        Comment(
            f"Expand: {column.name} is added with no default (no rewrite); SET DEFAULT then "
            "applies to new rows only, and existing rows are backfilled in batches."
        ),
        *added_for_fill(rw, moving, add, default, sync=False),
        *fill(rw, moving, column.type, not column.nullable, UPGRADE),
    ]


def conversion(
    rw: Rewrite, where: str, model: Column[Any], old: tuple[str, str], new: tuple[str, str]
) -> tuple[str, str] | None:
    """A type change's way there and back, from the column `old` to `new` (each a name and
    its type), as SQL over the row: the model's `using` (by default the cast) and `down`, which
    may be left out only where the cast back gives every old value again (else refused, None)."""
    (old_name, old_type), (new_name, new_type) = old, new
    down = model.info.get(transitions.DOWN)
    if down is None and not exact_round_trip(old_type, new_type):
        rw.refusals.append(
            f"{where}: only a widening comes back exactly by a cast, and a rollback must "
            "restore what each writer wrote. Expand/contract instead: mark "
            f"the column with info={{{transitions.USING!r}: ..., {transitions.DOWN!r}: "
            f"'<SQL over the new row giving the {old_type} value>'}}"
        )
        return None
    using = model.info.get(transitions.USING) or f"CAST({quote(old_name)} AS {new_type})"
    return using, down or f"CAST({quote(new_name)} AS {old_type})"


def expand_retype(
    rw: Rewrite, alter: ops.AlterColumnOp, old_type: str, new_type: str
) -> Undoable | list[ops.MigrateOperation]:
    """A shadow column of the new type, kept in step by a trigger and backfilled; then a
    cutover swaps the names in one short transaction and the trigger keeps the old column
    (renamed) in step until the contract."""
    table, name = alter.table_name, alter.column_name
    where = f"alter_column {table}.{name} type {old_type} to {new_type}"
    model = transitions.column_named(rw.metadata.tables.get(table), name)
    depending = dependents.dependents(rw.connection, table, name)
    carry = [d for d in depending if d.kind in dependents.RETYPE_CARRIES]
    rw.refusals += refused_carries(rw, where, table, carry)
    # A one-column primary key travels through unique indexes (retyped_key_indexes), a UNIQUE
    # constraint or index with the rest (carry), and the foreign keys referencing either follow
    # it over the new column's unique index, where their columns can reference the new type
    # (referenced_retype_refused). A composite key is refused (others): none of them follows.
    keys = [d for d in depending if d.kind == dependents.PRIMARY_KEY and "," not in d.definition]
    referencing = [d for d in depending if d.kind == dependents.REFERENCING]
    others = [
        d
        for d in depending
        if d.kind not in dependents.RETYPE_CARRIES and d not in keys and d not in referencing
    ]
    refused = (
        uncarried(rw, others)
        or refused_by_new_type(rw, table, name, new_type, carry)
        or refused_foreign_keys(rw, table, name, new_type)
    )
    if model is None:
        rw.refusals.append(f"{where}: {table} is not a table of the models")
        return [alter]
    references = dependents.references(rw.connection, table, name) if referencing else []
    if references and not refused:
        refused_references = referenced_retype_refused(rw.connection, table, name, new_type)
        if refused_references:
            rw.refusals.append(f"{where}: {refused_references}")
            return [alter]
    if refused:
        rw.refusals.append(
            f"{where}: {refused}. Expand/contract instead, in steps: change or drop it in a "
            "revision before this one, then change the type, then declare its new form"
        )
    converted = conversion(rw, where, model, (name, old_type), (name, new_type))
    if refused or converted is None:
        return [alter]
    using, down = converted
    was = {column["name"]: column for column in rw.reflected_columns(table)}[name]
    kept, shadow = transitions.kept_name(name), transitions.identifier(f"{name}__new")
    moving = Transition(
        RETYPE,
        table,
        name,
        f"(SELECT {using} FROM (SELECT {quote(kept)} AS {quote(name)}) AS old_row)",
        kept,
        rw.revision,
        back=down,
    )
    # Before the cutover, every writer names the old column: the trigger fills the shadow.
    before = Transition(RETYPE, table, name, name, shadow, back=using)
    steps: list[ops.MigrateOperation] = [
        Comment(
            f"Expand: {name} becomes {new_type} ({using}). {shadow} is filled for every row "
            f"and every write, then takes {name}'s place; the old column stays as {kept}, "
            "kept in step, until the contract."
        ),
        ops.AddColumnOp(
            table,
            Column(shadow, alter.modify_type, nullable=True, comment=model.comment),
            if_not_exists=True,
        ),
        *(Statement(sql) for sql in before.create_sql(in_flight=False)),
    ]
    rw.lock(UPGRADE, f"add_column {table}.{shadow} with its sync trigger: {SYNC_TRIGGER}")
    filled = Transition(RETYPE, table, shadow, f"({using})")
    steps += fill(rw, filled, alter.modify_type, not model.nullable, UPGRADE)
    if carry:
        steps.append(
            Comment(f"{name}'s indexes, CHECKs and UNIQUE constraints, built again over {shadow}.")
        )
    for dependent in carry:  # as the models declare it where they do: no cast of the old type
        copy = transitions.shadow_name(dependent.name)
        declared = declared_sql(rw, table, dependent, copy, over=(name, shadow))
        steps += built(rw, UPGRADE, dependent, table, name, shadow, copy, declared)
    for key in keys:
        steps += retyped_key_indexes(rw, table, name, shadow, key.name)
    rw.moving_references |= {r.name for r in references}
    for reference in references:  # each foreign key, again over the shadow's unique index
        copy = transitions.shadow_name(reference.name)
        steps += referenced_again(rw, UPGRADE, reference, name, shadow, copy)
    table_ = quote(table)
    cutover = [f"LOCK TABLE {table_} IN ACCESS EXCLUSIVE MODE"]
    if was["default"] is not None:
        cutover.append(f"ALTER TABLE {table_} ALTER COLUMN {quote(name)} DROP DEFAULT")
    cutover += [
        f"ALTER TABLE {table_} RENAME COLUMN {quote(name)} TO {quote(kept)}",
        f"ALTER TABLE {table_} RENAME COLUMN {quote(shadow)} TO {quote(name)}",
        # PostgreSQL 18's NOT NULL constraints keep their names through a rename.
        transitions.not_null_named_sql(table, kept),
        transitions.not_null_named_sql(table, name),
    ]
    for dependent in carry:  # the models' names go to the new column's copies
        cutover += [
            dependent.renamed_sql(table, dependent.name, transitions.kept_name(dependent.name)),
            dependent.takes_name_sql(
                table, transitions.shadow_name(dependent.name), dependent.name
            ),
        ]
    # The foreign keys over the old key's index go first; their copies then take their names.
    cutover += [r.dropped_sql() for r in references]
    for key in keys:  # over the shadow's unique index, under the same name
        cutover += primary_key_swap_sql(table, key.name)
    cutover += [r.renamed_sql(transitions.shadow_name(r.name), r.name) for r in references]
    if (default := forms.default_sql(model)) is not None:
        cutover.append(f"ALTER TABLE {table_} ALTER COLUMN {quote(name)} SET DEFAULT {default}")
    cutover += moving.create_sql()
    rw.lock(
        UPGRADE,
        f"cutover of {table}.{name}: the names swapped"
        + (" (its indexes', CHECKs' and UNIQUE constraints' too)" if carry else "")
        + (f", the primary key {keys[0].name} made over {shadow}'s unique index" if keys else "")
        + (
            ", the foreign keys referencing it dropped and their copies renamed (ACCESS "
            f"EXCLUSIVE on {', '.join(sorted({r.table for r in references}))} too)"
            if references
            else ""
        )
        + " and the trigger replaced in one transaction under ACCESS EXCLUSIVE, briefly "
        "(catalog updates)",
    )
    rw.waive(UPGRADE, "renaming-column", RENAMING)
    rw.waive(DOWNGRADE, "renaming-column", RENAMING)
    steps += [Comment("Cutover: one short transaction."), *map(Statement, cutover)]
    rw.cutovers.append((where, steps[-1]))
    # The key back on the old column over its spare unique index, before the new column goes,
    # and the foreign keys with it (NOT VALID: every new row is checked at once; validated
    # after, alone).
    keys_back = [
        *(r.dropped_sql() for r in references),
        *(
            sql
            for key in keys
            for sql in primary_key_swap_sql(table, key.name, transitions.kept_name(key.name))
        ),
        *(r.to(name, kept, r.name) for r in references),
    ]
    # The VALIDATEs below commit on their own: a re-run after this transaction committed finds
    # `kept` renamed back, and skips each step here that cannot run twice.
    index, flat = guard_index(
        rw,
        moving,
        name,
        f"({using})",
        DOWNGRADE,
        renamed=(name, kept),
        added={name: new_type},
        until_gone=kept,
    )
    undo = [
        *index,
        Comment(f"{kept} holds every value (the trigger copied each write): nothing is lost."),
        *lossless_drop(
            rw,
            moving,
            name,
            flat or moving.source,
            DOWNGRADE,
            before=keys_back,
            until_gone=kept,
            indexed=bool(flat),
        ),
        # The new column's copies went with it: the old ones take their names back.
        *(
            Statement(
                transitions.while_column_sql(
                    table, kept, d.renamed_sql(table, transitions.kept_name(d.name), d.name)
                )
            )
            for d in carry
        ),
        Statement(
            transitions.while_column_sql(
                table, kept, f"ALTER TABLE {table_} RENAME COLUMN {quote(kept)} TO {quote(name)}"
            )
        ),
        Statement(transitions.not_null_named_sql(table, name)),
    ]
    if was["default"] is not None:
        undo.append(
            Statement(
                f"ALTER TABLE {table_} ALTER COLUMN {quote(name)} SET DEFAULT {was['default']}"
            )
        )
    for reference in references:  # each VALIDATE in a transaction of its own: writes go on
        rw.lock(DOWNGRADE, f"foreign key {reference.name} on {reference.table}: {VALIDATED}")
        undo.append(
            AutocommitBlock(
                [
                    Statement(
                        f"ALTER TABLE {quote(reference.table)} "
                        f"VALIDATE CONSTRAINT {quote(reference.name)}"
                    )
                ]
            )
        )
    return Undoable(steps, undo)


def added_for_fill(
    rw: Rewrite, moving: Transition, add: ops.AddColumnOp, default: str | None, sync: bool = True
) -> list[ops.MigrateOperation]:
    """The column added nullable with no default (IF NOT EXISTS: a re-run finishes), its
    default set for new rows only, and its sync trigger: one transaction."""
    table, name = quote(moving.table), quote(moving.column)
    steps: list[ops.MigrateOperation] = [
        ops.AddColumnOp(
            moving.table,
            Column(moving.column, add.column.type, nullable=True, comment=add.column.comment),
            if_not_exists=True,
        )
    ]
    if default is not None:
        steps.append(Statement(f"ALTER TABLE {table} ALTER COLUMN {name} SET DEFAULT {default}"))
    if sync:
        steps += [Statement(sql) for sql in moving.create_sql()]
    return steps


def fill(
    rw: Rewrite,
    moving: Transition,
    type_: Any,
    not_null: bool,
    direction: str,
    key: str | None = None,
) -> list[ops.MigrateOperation]:
    """`moving.column` backfilled from `moving.source` in committed batches (chosen by `key`,
    by default the table's one-column primary key as it is now), then NOT NULL through a
    validated CHECK if it must be."""
    key = key or rw.key(moving.table)
    if key is None:
        rw.refusals.append(f"{moving.table}: a batched backfill needs a one-column primary key")
        return []
    todo = transitions.still_to_do(moving.column, moving.source)
    if direction == UPGRADE:
        declared = rw.backfills.get(moving.table)
        rw.backfills[moving.table] = f"({declared}) OR ({todo})" if declared else todo
    rw.lock(direction, f"backfill {moving.table}.{moving.column}: {BATCHES}")
    steps: list[ops.MigrateOperation] = [
        Comment("Backfill in committed batches; a re-run goes on from where it stopped."),
        Backfill(
            *(
                transitions.backfill_sql(
                    moving.table, key, moving.column, moving.source, batched=batched
                )
                for batched in (True, False)
            )
        ),
    ]
    if not_null:
        alter = ops.AlterColumnOp(
            moving.table, moving.column, modify_nullable=False, existing_type=type_
        )
        steps += forms.set_not_null(rw, alter, direction)
    return steps


def contract_old_column(rw: Rewrite, moving: Transition) -> Undoable:
    """A rename's or a type change's old column goes, with the sync trigger."""
    assert moving.old is not None
    old, given = moving.old, moving.back or quote(moving.column)
    was = {column["name"]: column for column in rw.reflected_columns(moving.table)}[old]
    depending = dependents.dependents(rw.connection, moving.table, old)
    keys = [d for d in depending if moves_primary_key(rw, d, moving.table, moving.column)]
    references = dependents.references(rw.connection, moving.table, old) if keys else []
    rw.moving_references |= {r.name for r in references}
    rw.moving_references |= {transitions.shadow_name(r.name) for r in references}
    blocking = [
        d
        for d in depending
        if d.kind not in dependents.RENAME_KEEPS
        and d not in keys
        and not (keys and d.kind == dependents.REFERENCING)
    ]
    if refused := uncarried(rw, blocking):
        rw.refusals.append(
            f"contract of {moving.table}.{old}: {refused}; dropping the column would drop "
            "them. Move them to the new column first, in a revision of their own"
        )
    # A function's body is not a dependent PostgreSQL knows of: it would fail at run time.
    naming = [
        entity.signature
        for entity in ENTITIES
        if isinstance(entity, PGFunction)
        and moving.table in entity.definition
        and dependents.mentions(entity.definition, old)
    ]
    if naming:
        rw.refusals.append(
            f"contract of {moving.table}.{old}: the function {', '.join(naming)} names it in "
            f"its body. Write it over {moving.column} in models/triggers.py (make revision "
            "replaces it), then contract"
        )
    guarded, flat = guard_index(rw, moving, old, given, UPGRADE)
    steps: list[ops.MigrateOperation] = [
        *guarded,
        Comment(
            f"Contract: {old} ("
            + (
                f"renamed to {moving.column}"
                if moving.kind == RENAME
                else f"{moving.column}'s old type"
            )
            + f", by {moving.revision or 'the expand'}) goes, with its sync trigger."
        ),
        *lossless_drop(
            rw,
            moving,
            old,
            flat or given,
            UPGRADE,
            # The foreign keys referencing the old column hold its key: they go first.
            before=[r.dropped_sql() for r in references],
            indexed=bool(flat),
        ),
    ]
    for key in keys:  # the old column took the primary key with it: its index takes over
        rw.lock(UPGRADE, f"primary key {key.name} over {moving.column}: {CATALOG_ONLY}")
        steps += map(Statement, primary_key_swap_sql(moving.table, key.name))
    # The foreign keys over the new name take their names.
    steps += (Statement(r.renamed_sql(transitions.shadow_name(r.name), r.name)) for r in references)
    # The way down: the old column back (with its default, if it kept one: new rows only, no
    # rewrite), kept in step again, backfilled.
    back = Transition(moving.kind, moving.table, old, given)
    undo: list[ops.MigrateOperation] = [
        Comment(f"{old} comes back, kept in step with {moving.column} again, backfilled."),
        ops.AddColumnOp(
            moving.table,
            Column(old, was["type"], nullable=True, comment=was.get("comment")),
            if_not_exists=True,
        ),
    ]
    if was["default"] is not None:
        undo.append(
            Statement(
                f"ALTER TABLE {quote(moving.table)} ALTER COLUMN {quote(old)} "
                f"SET DEFAULT {was['default']}"
            )
        )
    undo += [Statement(sql) for sql in moving.create_sql()]
    rw.lock(
        DOWNGRADE,
        f"add_column {moving.table}.{old}, with the sync trigger {moving.name}: {SYNC_TRIGGER}",
    )
    # Batches by the key as it will be then: on the new column, if it moved there.
    by = moving.column if keys else None
    undo += fill(rw, back, was["type"], not was["nullable"], DOWNGRADE, key=by)
    for key in keys:  # the key back on the old column, the new one's index built again
        index = transitions.kept_name(key.name)
        undo += primary_key_index(rw, DOWNGRADE, moving.table, old, key.name, index)
        rw.lock(DOWNGRADE, f"primary key {key.name} over {old}: {CATALOG_ONLY}")
        undo.append(Statement(key_moved_back_sql(moving, key.name, index, references)))
        undo += [  # each VALIDATE in a transaction of its own: it scans, writes go on
            AutocommitBlock(
                [Statement(f"ALTER TABLE {quote(r.table)} VALIDATE CONSTRAINT {quote(r.name)}")]
            )
            for r in references
        ]
        undo += primary_key_index(rw, DOWNGRADE, moving.table, moving.column, key.name)
        for reference in references:
            name = transitions.shadow_name(reference.name)
            undo += referenced_again(rw, DOWNGRADE, reference, old, moving.column, name)
    for dependent in depending:  # its indexes, CHECKs and UNIQUE constraints, as they are now
        if dependent.kind in dependents.RENAME_KEEPS:
            undo += built(rw, DOWNGRADE, dependent, moving.table, old, old, dependent.name)
        if dependent.kind == dependents.UNIQUE:
            attached = dependent.takes_name_sql(moving.table, dependent.name, dependent.name)
            undo.append(Statement(attached))
    return Undoable(steps, undo)


def contract_trigger(rw: Rewrite, moving: Transition, direction: str) -> list[ops.MigrateOperation]:
    """The sync trigger of a transition the models no longer mark: one with an old column
    goes with it (_contract_old_column); a backfill's alone, and comes back on the way
    down."""
    if moving.old is not None:
        return []
    if direction == DOWNGRADE:
        rw.lock(direction, f"create the sync trigger {moving.name} again: {SYNC_TRIGGER}")
        return [Statement(sql) for sql in moving.create_sql()]
    rw.waive(direction, "ban-drop-function", SYNC_DROP)
    rw.lock(
        direction,
        f"contract {moving.table}.{moving.column}: drop the sync trigger {moving.name}: "
        f"ACCESS EXCLUSIVE on {moving.table}, briefly (a catalog update)",
    )
    return [
        Comment(f"Contract: every writer now gives {moving.column}; its sync trigger goes."),
        *(Statement(sql) for sql in moving.drop_sql()),
    ]
