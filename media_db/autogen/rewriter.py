"""`make revision` writes the lock-safe form of every operation on an existing table.

Autogenerate proposes plain operations; on a populated table shared with n8n several of them
stop writes for a whole scan or rewrite. `rewrite()` runs in process_revision_directives and:

- turns each operation into its lock-safe form (the table in docs/schema-changes.md);
- writes as expand/contract (media_db/autogen/transitions.py) what has no lock-safe form in one
  step: a rename (the new column marked `info={"renamed_from": old}`), a NOT NULL column with
  no default (marked `info={"backfill": expression}`), a volatile default, a rewriting type
  change (optionally `info={"using": expression}`); and the contract once the marker goes;
- refuses, naming the marker to add or the steps to write instead, the rest: a rename or a NOT
  NULL column without its marker, a type change of a column an index, constraint or view
  depends on, a generated column;
- fills in what the reviewer and the tools need: one `Locks:` line per operation, the tables and
  columns each direction drops (read by the data-loss guard, media_db/deploy/data_loss.py), and the
  `make lint-sql` findings that the safe forms make on purpose, each with its reason.

Every step that commits on its own (a concurrent build, a VALIDATE) is written so that running
the revision again after a failure at any point finishes the job instead of failing on what the
first run left. Operations on a table created or dropped in the same step stay plain: nobody
else can be using a table that does not exist yet, and a table being dropped is locked anyway.

Each kind of operation has one rule, a method of `Rewrite` registered for its exact type with
`@rewrites` (as Alembic's `Rewriter.rewrites`); an operation no rule covers is written as
proposed, its `Locks:` line asking for a review by hand.
"""

import copy
import functools
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from alembic.operations import ops
from alembic.util import CommandError
from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.reversible_op import CreateOp, DropOp, ReplaceOp, ReversibleOp, RevertOp
from sqlalchemy import Column, Connection, ForeignKeyConstraint, MetaData, inspect, text
from sqlalchemy.sql.elements import TextClause, conv

from media_db.autogen import carried, storage_parameters, transitions
from media_db.autogen.locks import (
    BATCHES,
    CATALOG_ONLY,
    CONCURRENT,
    ENTITY_VERBS,
    FUNCTION_CHANGE,
    FUNCTION_DROP,
    GUARD_SCAN,
    GUARDED_DROP,
    LIGHT_STORAGE_PARAMETERS,
    LOSSLESS_DROP,
    RENAMING,
    RERUN,
    SYNC_DROP,
    SYNC_TRIGGER,
    TRIGGER_LOCKS,
    VALIDATED,
    WAIVERS,
    declarations,
    locks_paragraph,
)
from media_db.autogen.ops import AutocommitBlock, Backfill, Comment, EntityStep, Kept, Statement
from media_db.autogen.pg_types import binary_compatible, exact_round_trip, sql_type
from media_db.autogen.transitions import RENAME, RETYPE, Transition, quote
from media_db.models.migration_history import SURVIVES_DOWNGRADE

UPGRADE, DOWNGRADE = "upgrade", "downgrade"

Rule = TypeVar("Rule", bound=Callable[..., list[ops.MigrateOperation]])
# Rewrite's rule for each kind of operation, filled by @rewrites as the class body is read.
RULES: dict[type[ops.MigrateOperation], Callable[..., list[ops.MigrateOperation]]] = {}


def rewrites(*kinds: type[ops.MigrateOperation]) -> Callable[[Rule], Rule]:
    """Register the decorated method of Rewrite as the rule for operations of exactly these
    types (a subclass is not judged by its parent's rule), as Alembic's `Rewriter.rewrites`."""

    def register(rule: Rule) -> Rule:
        for kind in kinds:
            RULES[kind] = rule
        return rule

    return register


class Rewrite:
    """The rewriting of one revision: its operations, and what the file must declare."""

    def __init__(
        self, connection: Connection, revision: str = "", metadata: MetaData | None = None
    ) -> None:
        self.connection, self.revision = connection, revision
        self.metadata = metadata or MetaData()  # the models autogenerate compared with
        self.quote = connection.dialect.identifier_preparer.quote
        self.locks: dict[str, list[str]] = {UPGRADE: [], DOWNGRADE: []}
        self.drops: dict[str, list[str]] = defaultdict(list)
        self.waivers: dict[str, dict[str, str]] = defaultdict(dict)
        self.backfills: dict[str, str] = {}
        self.refusals: list[str] = []
        # What an expand or a contract writes in place of the downgrade's plain column op.
        self.undo: dict[tuple[str, str], list[ops.MigrateOperation]] = {}
        # What the downgrade's alter_column of "<table>.<column>" writes before its own steps.
        self.trigger_drops: dict[str, list[ops.MigrateOperation]] = {}
        # Indexes on a renamed column's old name: they serve its readers until the contract,
        # which drops them with the column (autogenerate does not see them: environment.py).
        self.kept_indexes: set[str] = set()

    @functools.cached_property
    def in_flight(self) -> dict[str, Transition]:
        """The transitions the catalog has in flight, by sync trigger; read when a rule asks
        (a hand-written revision is numbered with no database)."""
        return {found.name: found for found in transitions.in_flight(self.connection)}

    # --- the walk ---------------------------------------------------------------------------

    def operations(
        self, operations: list[ops.MigrateOperation], direction: str
    ) -> list[ops.MigrateOperation]:
        created_or_dropped = {
            operation.table_name
            for operation in operations
            if isinstance(operation, ops.CreateTableOp | ops.DropTableOp)
        }
        if direction == UPGRADE:
            for operation in operations:
                for step in getattr(operation, "ops", []):
                    if not isinstance(step, ops.AddColumnOp):
                        continue
                    found = transitions.marker(step.column)
                    if found is not None and found[0] == RENAME:
                        self._keep_until_contract(step.table_name, step.column.name, found[1])
        rewritten: list[ops.MigrateOperation] = []
        for operation in operations:
            if isinstance(operation, ops.ModifyTableOps):
                # A table created in this revision has nothing to lose (nor to reflect).
                if direction == UPGRADE and operation.table_name not in created_or_dropped:
                    self._refuse_renames(operation)
                inner = [
                    safe
                    for step in operation.ops
                    for safe in self._one(step, direction, created_or_dropped)
                ]
                rewritten.append(
                    ops.ModifyTableOps(operation.table_name, inner, schema=operation.schema)
                )
            else:
                rewritten += self._one(operation, direction, created_or_dropped)
        return rewritten

    def _one(
        self, operation: ops.MigrateOperation, direction: str, fresh: set[str]
    ) -> list[ops.MigrateOperation]:
        table = _table_of(operation)
        kept = (getattr(operation, "info", None) or {}).get(SURVIVES_DOWNGRADE)
        if isinstance(operation, ops.CreateTableOp) and kept:
            # A downgrade below this revision keeps the table, so upgrading again finds it.
            operation.if_not_exists, operation.info = True, {}
            self._lock(
                direction,
                f"create_table {table} IF NOT EXISTS: a new table, nothing existing is locked",
            )
            return [operation]
        if isinstance(operation, ops.CreateTableOp):
            referenced = _referenced_tables(operation)
            self._lock(
                direction,
                f"create_table {table}: a new table"
                + (
                    f"; its foreign keys take SHARE ROW EXCLUSIVE on {', '.join(referenced)}, "
                    "briefly (a catalog update)"
                    if referenced
                    else ", nothing existing is locked"
                ),
            )
            return [operation]
        if isinstance(operation, ops.DropTableOp) and kept:
            self._lock(direction, f"{table} is kept, nothing is locked")
            return [Kept(f"{table} is kept: {kept}.")]
        if isinstance(operation, ops.DropTableOp):
            self._drop(direction, "tables", table, "ban-drop-table")
            self._lock(direction, f"drop_table {table}: {GUARDED_DROP}")
            return [operation]
        if table in fresh:
            self._lock(direction, f"{_name(operation)} on {table}: goes with its table (same step)")
            return [operation]
        rule = RULES.get(type(operation))
        if rule is None:
            self._lock(
                direction,
                f"{_name(operation)} on {table}: not judged by make revision, "
                "review its locks by hand",
            )
            return [operation]
        return rule(self, operation, direction)

    # --- columns ----------------------------------------------------------------------------

    @rewrites(ops.AddColumnOp)
    def _add_column(self, add: ops.AddColumnOp, direction: str) -> list[ops.MigrateOperation]:
        column, where = add.column, f"{add.table_name}.{add.column.name}"
        if (undo := self.undo.pop((add.table_name, column.name), None)) is not None:
            return undo  # a contract's way down
        default = _default_sql(column)
        generated = column.computed is not None or column.identity is not None
        volatile = self._volatile_functions(default) if default is not None else []
        marker = transitions.marker(column)
        if direction == UPGRADE and not generated:
            if marker is not None and marker[0] == RENAME:
                return self._expand_rename(add, marker[1])
            if marker is not None:
                return self._expand_backfill(add, marker[1])
            if volatile:
                assert default is not None
                return self._expand_volatile(add, default)
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
            self.refusals.append(f"add_column {where}: {problem}. Expand/contract instead: {how}.")
        how = f"a rewrite: {problem}" if problem else CATALOG_ONLY
        self._lock(direction, f"add_column {where}: {how}")
        return [add]

    @rewrites(ops.DropColumnOp)
    def _drop_column(self, drop: ops.DropColumnOp, direction: str) -> list[ops.MigrateOperation]:
        where = f"{drop.table_name}.{drop.column_name}"
        if (undo := self.undo.pop((drop.table_name, drop.column_name), None)) is not None:
            return undo  # an expand's way down
        renamed = [
            moving
            for moving in self.in_flight.values()
            if (moving.table, moving.old) == (drop.table_name, drop.column_name)
        ]
        if direction == UPGRADE and renamed:
            return self._contract_old_column(renamed[0])
        self._drop(direction, "columns", where, "ban-drop-column")
        self._lock(direction, f"drop_column {where}: {GUARDED_DROP}")
        return [drop]

    def _refuse_renames(self, table_ops: ops.ModifyTableOps) -> None:
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
            for column in self._reflected_columns(table_ops.table_name)
        }
        for old in dropped:
            for new, type_ in added.items():
                if existing.get(old) == type_:
                    self.refusals.append(
                        f"{table_ops.table_name}: {old} dropped and {new} added, both {type_}: "
                        f"autogenerate sees a rename as a drop and an add, which loses {old}'s "
                        f"data. Expand/contract instead: mark {new} with info="
                        f"{{{transitions.RENAMED_FROM!r}: {old!r}}} and make revision writes "
                        "the expand (both names kept in step), then the contract once you "
                        "remove the marker. Unrelated columns: drop and add in two revisions."
                    )

    @rewrites(ops.AlterColumnOp)
    def _alter_column(self, alter: ops.AlterColumnOp, direction: str) -> list[ops.MigrateOperation]:
        where = f"{alter.table_name}.{alter.column_name}"
        if (undo := self.undo.pop((alter.table_name, alter.column_name), None)) is not None:
            return undo  # a type change's expand, on its way down
        if direction == UPGRADE and alter.modify_type is not None:
            old, new = sql_type(alter.existing_type), sql_type(alter.modify_type)
            if not binary_compatible(old, new):
                return self._expand_retype(alter, old, new)
        written: list[ops.MigrateOperation] = list(self.trigger_drops.pop(where, []))
        rest = copy.copy(alter)
        rest.modify_nullable = None
        if alter.modify_type is not None:
            old, new = sql_type(alter.existing_type), sql_type(alter.modify_type)
            if binary_compatible(old, new):
                how = f"{old} to {new} is binary-compatible; {CATALOG_ONLY}"
                self._waive(direction, "changing-column-type")
            else:
                how = (
                    "ACCESS EXCLUSIVE while the table is checked and rewritten (undoing a "
                    "widening); fails, changing nothing, if a value no longer fits"
                )
                self._waive(direction, "changing-column-type")
            self._lock(direction, f"alter_column {where} type: {how}")
        if alter.modify_server_default is not False:
            self._lock(direction, f"alter_column {where} server default: {CATALOG_ONLY}")
        if alter.modify_comment is not False:
            self._lock(direction, f"alter_column {where} comment: {CATALOG_ONLY}")
        if _modifies_anything(rest):
            written.append(rest)
        if alter.modify_nullable is True:
            self._waive(direction, "ban-drop-not-null")
            written.append(_only_nullable(alter))
            self._lock(direction, f"alter_column {where} DROP NOT NULL: {CATALOG_ONLY}")
        elif alter.modify_nullable is False:
            marked = self._marker(alter.table_name, alter.column_name)
            if direction == UPGRADE and marked is not None and marked[0] == transitions.FILL:
                written += self._expand_existing_backfill(alter, marked[1])
            else:
                written += self._set_not_null(alter, direction)
        return written

    def _set_not_null(self, alter: ops.AlterColumnOp, direction: str) -> list[ops.MigrateOperation]:
        """SET NOT NULL scans the table under ACCESS EXCLUSIVE, unless a validated CHECK (col IS
        NOT NULL) proves it (PostgreSQL 12+): validate one first, without blocking writes."""
        table, column = alter.table_name, alter.column_name
        helper = transitions.identifier(f"{table}_{column}_not_null_check")
        condition = f"{self.quote(column)} IS NOT NULL"
        self._waive(direction, "ban-drop-constraint")
        self._waive(direction, "adding-not-nullable-field")
        self._lock(
            direction,
            f"alter_column {table}.{column} SET NOT NULL: a CHECK ({condition}) is added NOT "
            f"VALID, then {VALIDATED}; SET NOT NULL then needs no scan, and the CHECK is "
            "dropped; each catalog step takes ACCESS EXCLUSIVE briefly",
        )
        return [
            *self._not_valid_then_validate(
                direction,
                table,
                helper,
                "check",
                ops.CreateCheckConstraintOp(conv(helper), table, text(condition)),
            ),
            _only_nullable(alter),
            ops.DropConstraintOp(conv(helper), table, type_="check"),
        ]

    @rewrites(storage_parameters.SetStorageParametersOp)
    def _storage_parameters(
        self, change: storage_parameters.SetStorageParametersOp, direction: str
    ) -> list[ops.MigrateOperation]:
        names = sorted({*change.set_, *change.reset})
        light = all(name.startswith(LIGHT_STORAGE_PARAMETERS) for name in names)
        lock = "SHARE UPDATE EXCLUSIVE, reads and writes continue" if light else CATALOG_ONLY
        self._lock(
            direction, f"storage parameters {', '.join(names)} of {change.table_name}: {lock}"
        )
        return [Statement(statement) for statement in change.statements()]

    # --- indexes and constraints ----------------------------------------------------------------

    def _keep_until_contract(self, table: str, new: str, old: str) -> None:
        """A rename's old column keeps its indexes until the contract (the new column's are
        built beside them, so there is never a window without one): a new index cannot take
        one's name. A key, a foreign key, a view or a trigger on it cannot follow the rename
        yet, and is refused."""
        depending = carried.dependents(self.connection, table, old)
        self.kept_indexes |= {d.name for d in depending if d.kind == carried.INDEX}
        refused = self._uncarried([d for d in depending if not d.carried])
        if refused:
            self.refusals.append(
                f"add_column {table}.{new} (renamed from {old}): {refused}. Rename it by "
                "hand, or move them to a column of their own first"
            )

    @rewrites(ops.CreateIndexOp)
    def _create_index(
        self, create: ops.CreateIndexOp, direction: str
    ) -> list[ops.MigrateOperation]:
        name = str(create.index_name)
        if direction == UPGRADE and name in self.kept_indexes:
            self.refusals.append(
                f"create_index {name} on {create.table_name}: an index of that name stays on "
                "the renamed column's old name until the contract. Name the new one otherwise "
                "(the naming convention's <table>_<column>_idx does)"
            )
            return [create]
        self._lock(
            direction,
            f"create_index {create.index_name} CONCURRENTLY on {create.table_name}: {CONCURRENT} "
            "(an INVALID leftover of a failed build is dropped first)",
        )
        return [AutocommitBlock([_concurrent(create)])]

    @rewrites(ops.DropIndexOp)
    def _drop_index(self, drop: ops.DropIndexOp, direction: str) -> list[ops.MigrateOperation]:
        self._lock(
            direction,
            f"drop_index {drop.index_name} CONCURRENTLY: SHARE UPDATE EXCLUSIVE, reads and "
            "writes continue",
        )
        drop = copy.copy(drop)
        drop.kw = {**drop.kw, "postgresql_concurrently": True}
        drop.if_exists = True
        return [AutocommitBlock([drop])]

    @rewrites(ops.CreateUniqueConstraintOp)
    def _add_unique(
        self, add: ops.CreateUniqueConstraintOp, direction: str
    ) -> list[ops.MigrateOperation]:
        table, name = add.table_name, str(add.constraint_name)
        self._waive(direction, "ban-drop-constraint")
        self._lock(
            direction,
            f"unique constraint {name} on {table}: its index is built CONCURRENTLY under "
            f"{CONCURRENT}; then ADD CONSTRAINT ... USING INDEX takes {CATALOG_ONLY}",
        )
        index = ops.CreateIndexOp(
            conv(name), table, list(add.columns), unique=True, schema=add.schema
        )
        return [
            Comment(f"Drop {RERUN}."),
            ops.DropConstraintOp(add.constraint_name, table, type_="unique", if_exists=True),
            AutocommitBlock([_concurrent(index)]),
            Statement(
                f"ALTER TABLE {self.quote(table)} ADD CONSTRAINT {self.quote(name)} "
                f"UNIQUE USING INDEX {self.quote(name)}{_deferrable(add.kw)}"
            ),
        ]

    @rewrites(ops.CreateCheckConstraintOp)
    def _add_check(
        self, add: ops.CreateCheckConstraintOp, direction: str
    ) -> list[ops.MigrateOperation]:
        table, name = add.table_name, str(add.constraint_name)
        self._lock(
            direction,
            f"check constraint {name} on {table}: ADD ... NOT VALID takes {CATALOG_ONLY}; "
            f"then {VALIDATED}",
        )
        return self._not_valid_then_validate(direction, table, name, "check", add)

    @rewrites(ops.CreateForeignKeyOp)
    def _add_foreign_key(
        self, add: ops.CreateForeignKeyOp, direction: str
    ) -> list[ops.MigrateOperation]:
        table, name = add.source_table, str(add.constraint_name)
        self._lock(
            direction,
            f"foreign key {name} on {table}: ADD ... NOT VALID takes SHARE ROW EXCLUSIVE on "
            f"{table} and {add.referent_table}, briefly (a catalog update); then {VALIDATED}",
        )
        return self._not_valid_then_validate(direction, table, name, "foreignkey", add)

    def _not_valid_then_validate(
        self,
        direction: str,
        table: str,
        name: str,
        type_: str,
        add: ops.CreateCheckConstraintOp | ops.CreateForeignKeyOp,
    ) -> list[ops.MigrateOperation]:
        """ADD ... NOT VALID (a leftover of a failed run dropped first), then VALIDATE alone."""
        add = copy.copy(add)
        add.kw = {**add.kw, "postgresql_not_valid": True}
        return self._validated(direction, table, name, type_, add)

    def _validated(
        self, direction: str, table: str, name: str, type_: str, add: ops.MigrateOperation
    ) -> list[ops.MigrateOperation]:
        """`add`, which adds the constraint `name` NOT VALID, then VALIDATE alone."""
        self._waive(direction, "ban-drop-constraint")
        return [
            Comment(f"Drop {RERUN}."),
            ops.DropConstraintOp(conv(name), table, type_=type_, if_exists=True),
            add,
            Comment("VALIDATE in a transaction of its own: it scans without blocking writes."),
            AutocommitBlock(
                [
                    Statement(
                        f"ALTER TABLE {self.quote(table)} VALIDATE CONSTRAINT {self.quote(name)}"
                    )
                ]
            ),
        ]

    @rewrites(ops.DropConstraintOp)
    def _drop_constraint(
        self, drop: ops.DropConstraintOp, direction: str
    ) -> list[ops.MigrateOperation]:
        name = str(drop.constraint_name)
        self._waive(direction, "ban-drop-constraint")
        also = " (and on the referenced table)" if drop.constraint_type == "foreignkey" else ""
        self._lock(direction, f"drop_constraint {name} on {drop.table_name}: {CATALOG_ONLY}{also}")
        return [drop]

    # --- functions and triggers (alembic_utils) -------------------------------------------------

    @rewrites(CreateOp, ReplaceOp, RevertOp, DropOp)
    def _entity(self, operation: ReversibleOp, direction: str) -> list[ops.MigrateOperation]:
        verb = ENTITY_VERBS[type(operation)]
        # A revert puts back the definition autogenerate found on the server.
        entity = operation.target
        if isinstance(operation, RevertOp) and entity._version_to_replace is not None:
            entity = entity._version_to_replace
        moving = self.in_flight.get(entity.signature) if isinstance(entity, PGTrigger) else None
        if moving is not None and moving.table == _table_of(operation):
            return self._contract_trigger(moving, direction)
        if isinstance(entity, PGTrigger):
            table = _table_of(operation)
            lock = TRIGGER_LOCKS[type(operation)].format(table=table)
            self._lock(direction, f"{verb} trigger {entity.signature} on {table}: {lock}")
        elif isinstance(entity, PGFunction):
            lock = FUNCTION_CHANGE
            if isinstance(operation, DropOp):
                lock = FUNCTION_DROP
                self._waive(direction, "ban-drop-function")
            self._lock(direction, f"{verb} function {entity.signature}: {lock}")
        else:
            self._lock(
                direction,
                f"{verb} {entity.identity}: not judged by make revision, review its locks by hand",
            )
        return [EntityStep(verb, entity)]

    # --- expand/contract (media_db/autogen/transitions.py) ---------------------------------------

    def _expand_rename(self, add: ops.AddColumnOp, old: str) -> list[ops.MigrateOperation]:
        table, new = add.table_name, add.column
        where = f"add_column {table}.{new.name} (renamed from {old})"
        was = {column["name"]: column for column in self._reflected_columns(table)}.get(old)
        if was is None or sql_type(was["type"]) != sql_type(new.type):
            self.refusals.append(
                f"{where}: {table} has no column {old}"
                if was is None
                else f"{where}: {old} is {sql_type(was['type'])}, {new.name} "
                f"{sql_type(new.type)}: rename first, then change the type in another revision"
            )
            return [add]
        moving = Transition(RENAME, table, new.name, quote(old), old, self.revision)
        steps: list[ops.MigrateOperation] = [
            Comment(
                f"Expand: {old} is renamed to {new.name}. Writers of either name keep working: "
                f"the trigger {moving.name} copies every write to the other column."
            )
        ]
        old_default = was["default"]
        if old_default is not None:
            # A default on the old name would hide what a writer of the new name gave.
            steps.append(
                Statement(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(old)} DROP DEFAULT")
            )
        steps += self._added_for_fill(moving, add, _default_sql(new))
        self._lock(UPGRADE, f"{where}, with the sync trigger {moving.name}: {SYNC_TRIGGER}")
        steps += self._fill(moving, new.type, not new.nullable, UPGRADE)
        restore = (
            [
                Statement(
                    f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(old)} "
                    f"SET DEFAULT {old_default}"
                )
            ]
            if old_default is not None
            else []
        )
        self.undo[(table, new.name)] = [
            Comment(f"{old} holds every value (the trigger copied each write): nothing is lost."),
            *self._lossless_drop(moving, new.name, moving.source, DOWNGRADE),
            *restore,
        ]
        return steps

    def _expand_backfill(self, add: ops.AddColumnOp, expression: str) -> list[ops.MigrateOperation]:
        table, column = add.table_name, add.column
        where = f"add_column {table}.{column.name}"
        if _default_sql(column) is not None:
            self.refusals.append(
                f"{where}: info {transitions.BACKFILL!r} and a server default: the default "
                "already fills existing rows; keep one of them"
            )
            return [add]
        moving = Transition(
            transitions.FILL, table, column.name, f"({expression})", None, self.revision
        )
        steps: list[ops.MigrateOperation] = [
            Comment(
                f"Expand: {column.name} is added nullable; the trigger {moving.name} fills it "
                f"from {expression} when a writer leaves it NULL: old writers keep working."
            ),
            *self._added_for_fill(moving, add, None),
        ]
        self._lock(UPGRADE, f"{where}, with the sync trigger {moving.name}: {SYNC_TRIGGER}")
        steps += self._fill(moving, column.type, not column.nullable, UPGRADE)
        self.undo[(table, column.name)] = [
            Comment(f"Every {column.name} is what {expression} gives back: nothing is lost."),
            *self._lossless_drop(moving, column.name, moving.source, DOWNGRADE),
        ]
        return steps

    def _expand_existing_backfill(
        self, alter: ops.AlterColumnOp, expression: str
    ) -> list[ops.MigrateOperation]:
        """An existing nullable column becoming NOT NULL, marked with a backfill: the sync
        trigger fills what a writer leaves NULL (old inserts keep working), the rows are
        backfilled in batches, then NOT NULL through the validated CHECK. The way down drops
        NOT NULL and the trigger; the values filled in stay."""
        table, column = alter.table_name, alter.column_name
        moving = Transition(transitions.FILL, table, column, f"({expression})", None, self.revision)
        self._lock(
            UPGRADE,
            f"sync trigger {moving.name} on {table}.{column} (fills a NULL from "
            f"{expression}): {TRIGGER_LOCKS[ReplaceOp].format(table=table)}",
        )
        self._waive(DOWNGRADE, "ban-drop-function", SYNC_DROP)
        self._lock(
            DOWNGRADE,
            f"drop the sync trigger {moving.name}: {TRIGGER_LOCKS[DropOp].format(table=table)}",
        )
        self.trigger_drops[f"{table}.{column}"] = [Statement(sql) for sql in moving.drop_sql()]
        return [
            Comment(
                f"Expand: {column} becomes NOT NULL. The trigger {moving.name} fills it from "
                f"{expression} when a writer leaves it NULL, so old writers keep working; "
                "existing rows are filled in batches first."
            ),
            *(Statement(sql) for sql in moving.create_sql()),
            *self._fill(moving, alter.existing_type, True, UPGRADE),
        ]

    def _marker(self, table: str, column: str) -> tuple[str, str] | None:
        """The transition the models' column declares (transitions.MARKERS), if any."""
        declared = self.metadata.tables.get(table)
        found = declared.c.get(column) if declared is not None else None
        return transitions.marker(found) if found is not None else None

    def _expand_volatile(self, add: ops.AddColumnOp, default: str) -> list[ops.MigrateOperation]:
        table, column = add.table_name, add.column
        moving = Transition(transitions.FILL, table, column.name, default)
        self._lock(
            UPGRADE,
            f"add_column {table}.{column.name} with no default, then SET DEFAULT {default} "
            f"(new rows only): {CATALOG_ONLY}",
        )
        return [
            Comment(
                f"Expand: {column.name} is added with no default (no rewrite); SET DEFAULT then "
                "applies to new rows only, and existing rows are backfilled in batches."
            ),
            *self._added_for_fill(moving, add, default, sync=False),
            *self._fill(moving, column.type, not column.nullable, UPGRADE),
        ]

    def _expand_retype(
        self, alter: ops.AlterColumnOp, old_type: str, new_type: str
    ) -> list[ops.MigrateOperation]:
        """A shadow column of the new type, kept in step by a trigger and backfilled; then a
        cutover swaps the names in one short transaction and the trigger keeps the old column
        (renamed) in step until the contract."""
        table, name = alter.table_name, alter.column_name
        where = f"alter_column {table}.{name} type {old_type} to {new_type}"
        model = self.metadata.tables[table].c[name] if table in self.metadata.tables else None
        found = transitions.marker(model) if model is not None else None
        using = found[1] if found and found[0] == RETYPE else f"CAST({quote(name)} AS {new_type})"
        depending = carried.dependents(self.connection, table, name)
        carry = [dependent for dependent in depending if dependent.carried]
        refused = self._uncarried([d for d in depending if not d.carried]) or (
            carried.refused_by_new_type(self.connection, table, name, new_type, carry)
        )
        if model is None:
            self.refusals.append(f"{where}: {table} is not a table of the models")
            return [alter]
        if refused:
            self.refusals.append(
                f"{where}: {refused}. Expand/contract instead, in steps: change or drop it in a "
                "revision before this one, then change the type, then declare its new form"
            )
        down = model.info.get(transitions.DOWN)
        no_way_back = down is None and not exact_round_trip(old_type, new_type)
        if no_way_back:
            self.refusals.append(
                f"{where}: only a widening comes back exactly by a cast, and a rollback must "
                "restore what each writer wrote. Expand/contract instead: mark "
                f"the column with info={{{transitions.USING!r}: ..., {transitions.DOWN!r}: "
                f"'<SQL over the new row giving the {old_type} value>'}}"
            )
        if refused or no_way_back:
            return [alter]
        was = {column["name"]: column for column in self._reflected_columns(table)}[name]
        kept, shadow = transitions.kept_name(name), transitions.identifier(f"{name}__new")
        moving = Transition(
            RETYPE,
            table,
            name,
            f"(SELECT {using} FROM (SELECT {quote(kept)} AS {quote(name)}) AS old_row)",
            kept,
            self.revision,
            back=down or f"CAST({quote(name)} AS {old_type})",
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
        self._lock(UPGRADE, f"add_column {table}.{shadow} with its sync trigger: {SYNC_TRIGGER}")
        filled = Transition(RETYPE, table, shadow, f"({using})")
        steps += self._fill(filled, alter.modify_type, not model.nullable, UPGRADE)
        if carry:
            steps.append(Comment(f"{name}'s indexes and CHECKs, built again over {shadow}."))
        for dependent in carry:
            steps += self._built(
                UPGRADE, dependent, table, name, shadow, carried.shadow_name(dependent.name)
            )
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
            kept_copy, copy_ = transitions.kept_name(dependent.name), dependent.name
            cutover += [
                dependent.renamed_sql(table, dependent.name, kept_copy),
                dependent.renamed_sql(table, carried.shadow_name(dependent.name), copy_),
            ]
        if (default := _default_sql(model)) is not None:
            cutover.append(f"ALTER TABLE {table_} ALTER COLUMN {quote(name)} SET DEFAULT {default}")
        cutover += moving.create_sql()
        self._lock(
            UPGRADE,
            f"cutover of {table}.{name}: the names swapped"
            + (" (its indexes' and CHECKs' too)" if carry else "")
            + " and the trigger replaced in one transaction under ACCESS EXCLUSIVE, briefly "
            "(catalog updates)",
        )
        self._waive(UPGRADE, "renaming-column", RENAMING)
        self._waive(DOWNGRADE, "renaming-column", RENAMING)
        steps += [Comment("Cutover: one short transaction."), *map(Statement, cutover)]
        undo = [
            Comment(f"{kept} holds every value (the trigger copied each write): nothing is lost."),
            *self._lossless_drop(moving, name, moving.source, DOWNGRADE),
            Statement(f"ALTER TABLE {table_} RENAME COLUMN {quote(kept)} TO {quote(name)}"),
            Statement(transitions.not_null_named_sql(table, name)),
            # The new column's copies went with it: the old ones take their names back.
            *(
                Statement(d.renamed_sql(table, transitions.kept_name(d.name), d.name))
                for d in carry
            ),
        ]
        if was["default"] is not None:
            undo.append(
                Statement(
                    f"ALTER TABLE {table_} ALTER COLUMN {quote(name)} SET DEFAULT {was['default']}"
                )
            )
        self.undo[(table, name)] = undo
        return steps

    def _uncarried(self, blocking: list[carried.Dependent]) -> str | None:
        """Why the column's dependents keep it from moving (None: nothing does)."""
        if not blocking:
            return None
        return (
            f"{'; '.join(map(str, blocking))} depend{'s' if len(blocking) == 1 else ''} on it, "
            "and make revision carries only indexes and CHECKs from one column to another"
        )

    def _built(
        self,
        direction: str,
        dependent: carried.Dependent,
        table: str,
        column: str,
        over: str,
        name: str,
    ) -> list[ops.MigrateOperation]:
        """`dependent` (an index or a CHECK on `column`) built again over the column `over`,
        named `name`, without blocking writes."""
        sql = dependent.over(table, column, over, name)
        if dependent.kind == carried.CHECK:
            self._lock(
                direction,
                f"check constraint {name} on {table}: ADD ... NOT VALID takes {CATALOG_ONLY}; "
                f"then {VALIDATED}",
            )
            return self._validated(direction, table, name, "check", Statement(sql))
        self._lock(direction, f"create_index {name} CONCURRENTLY on {table}: {CONCURRENT}")
        return [
            AutocommitBlock(
                [Statement(transitions.invalid_index_dropped_sql(name)), Statement(sql)]
            )
        ]

    def _added_for_fill(
        self, moving: Transition, add: ops.AddColumnOp, default: str | None, sync: bool = True
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
            steps.append(
                Statement(f"ALTER TABLE {table} ALTER COLUMN {name} SET DEFAULT {default}")
            )
        if sync:
            steps += [Statement(sql) for sql in moving.create_sql()]
        return steps

    def _fill(
        self, moving: Transition, type_: Any, not_null: bool, direction: str
    ) -> list[ops.MigrateOperation]:
        """`moving.column` backfilled from `moving.source` in committed batches, then NOT NULL
        through a validated CHECK if it must be."""
        key = self._key(moving.table)
        if key is None:
            self.refusals.append(
                f"{moving.table}: a batched backfill needs a one-column primary key"
            )
            return []
        todo = transitions.still_to_do(moving.column, moving.source)
        if direction == UPGRADE:
            declared = self.backfills.get(moving.table)
            self.backfills[moving.table] = f"({declared}) OR ({todo})" if declared else todo
        self._lock(direction, f"backfill {moving.table}.{moving.column}: {BATCHES}")
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
            steps += self._set_not_null(alter, direction)
        return steps

    def _lossless_drop(
        self, moving: Transition, dropped: str, kept: str, direction: str
    ) -> list[ops.MigrateOperation]:
        """Drop `dropped` and the sync trigger, no consent asked: the guard refuses, under the
        drop's lock, if `dropped` holds a value that `kept` does not give back."""
        self._lock(
            direction,
            f"drop {moving.table}.{dropped} and the sync trigger {moving.name}: {GUARD_SCAN}",
        )
        self._waive(direction, "ban-drop-column", LOSSLESS_DROP)
        self._waive(direction, "ban-drop-function", SYNC_DROP)
        prefix = "upgrade_" if direction == UPGRADE else ""
        self.drops[f"{prefix}lossless_drops_columns"].append(f"{moving.table}.{dropped}")
        return [
            *(
                Statement(sql)
                for sql in transitions.guarded_drop_sql(
                    moving.table, dropped, kept, kept_column=moving.kind == RENAME
                )
            ),
            *(Statement(sql) for sql in moving.drop_sql()),
            Statement(f"ALTER TABLE {quote(moving.table)} DROP COLUMN {quote(dropped)}"),
        ]

    def _contract_old_column(self, moving: Transition) -> list[ops.MigrateOperation]:
        """A rename's or a type change's old column goes, with the sync trigger."""
        assert moving.old is not None
        old, given = moving.old, moving.back or quote(moving.column)
        was = {column["name"]: column for column in self._reflected_columns(moving.table)}[old]
        depending = carried.dependents(self.connection, moving.table, old)
        refused = self._uncarried([d for d in depending if not d.carried])
        if refused:
            self.refusals.append(
                f"contract of {moving.table}.{old}: {refused}; dropping the column would drop "
                "them. Move them to the new column first, in a revision of their own"
            )
        steps: list[ops.MigrateOperation] = [
            Comment(
                f"Contract: {old} ({moving.kind} of {moving.column} by "
                f"{moving.revision or 'the expand'}) goes, with its sync trigger."
            ),
            *self._lossless_drop(moving, old, given, UPGRADE),
        ]
        # The way down: the old column back, kept in step again, backfilled.
        back = Transition(moving.kind, moving.table, old, given)
        undo: list[ops.MigrateOperation] = [
            Comment(f"{old} comes back, kept in step with {moving.column} again, backfilled."),
            ops.AddColumnOp(
                moving.table,
                Column(old, was["type"], nullable=True, comment=was.get("comment")),
                if_not_exists=True,
            ),
            *(Statement(sql) for sql in moving.create_sql()),
        ]
        self._lock(
            DOWNGRADE,
            f"add_column {moving.table}.{old}, with the sync trigger {moving.name}: {SYNC_TRIGGER}",
        )
        undo += self._fill(back, was["type"], not was["nullable"], DOWNGRADE)
        for dependent in depending:  # its indexes and CHECKs, as they are now
            if dependent.carried:
                undo += self._built(DOWNGRADE, dependent, moving.table, old, old, dependent.name)
        self.undo[(moving.table, old)] = undo
        return steps

    def _contract_trigger(self, moving: Transition, direction: str) -> list[ops.MigrateOperation]:
        """The sync trigger of a transition the models no longer mark: one with an old column
        goes with it (_contract_old_column); a backfill's alone, and comes back on the way
        down."""
        if moving.old is not None:
            return []
        if direction == DOWNGRADE:
            self._lock(direction, f"create the sync trigger {moving.name} again: {SYNC_TRIGGER}")
            return [Statement(sql) for sql in moving.create_sql()]
        self._waive(direction, "ban-drop-function", SYNC_DROP)
        self._lock(
            direction,
            f"contract {moving.table}.{moving.column}: drop the sync trigger {moving.name}: "
            f"ACCESS EXCLUSIVE on {moving.table}, briefly (a catalog update)",
        )
        return [
            Comment(f"Contract: every writer now gives {moving.column}; its sync trigger goes."),
            *(Statement(sql) for sql in moving.drop_sql()),
        ]

    # --- bookkeeping ------------------------------------------------------------------------

    def _waive(self, direction: str, rule: str, why: str | None = None) -> None:
        self.waivers[direction][rule] = why or WAIVERS[rule]

    def _lock(self, direction: str, line: str) -> None:
        self.locks[direction].append(line)

    def _drop(self, direction: str, kind: str, name: str, rule: str) -> None:
        prefix = "upgrade_" if direction == UPGRADE else ""
        self.drops[f"{prefix}drops_{kind}"].append(name)
        self._waive(direction, rule)

    def _volatile_functions(self, sql: str) -> list[str]:
        called = sorted(set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", sql)))
        if not called:
            return []
        rows = self.connection.execute(
            text(
                "SELECT DISTINCT proname FROM pg_proc WHERE provolatile = 'v' "
                "AND proname = ANY(:names) ORDER BY proname"
            ),
            {"names": called},
        )
        return [f"{name}()" for (name,) in rows]

    def _reflected_columns(self, table: str) -> list[Any]:
        return list(inspect(self.connection).get_columns(table))

    def _key(self, table: str) -> str | None:
        """The one-column primary key backfill batches are chosen by, or None."""
        columns = inspect(self.connection).get_pk_constraint(table)["constrained_columns"]
        return columns[0] if len(columns) == 1 else None

    # --- what the file declares --------------------------------------------------------------

    def template_args(self) -> dict[str, str]:
        if self.refusals:
            raise CommandError(
                "No revision written: these changes have no lock-safe form on a populated "
                "table.\n  - " + "\n  - ".join(self.refusals)
            )
        return {
            "locks": locks_paragraph(self.locks),
            "declarations": declarations(self.drops, self.waivers, self.backfills),
        }


def rewrite(
    script: ops.MigrationScript, connection: Connection, metadata: MetaData | None = None
) -> dict[str, str]:
    """Rewrite `script`'s operations in place into their lock-safe forms; return the template
    arguments (`locks`, `declarations`), or raise CommandError listing every refused change."""
    rewrite = Rewrite(connection, script.rev_id or "", metadata)
    assert script.upgrade_ops is not None
    assert script.downgrade_ops is not None
    script.upgrade_ops.ops = rewrite.operations(script.upgrade_ops.ops, UPGRADE)
    script.downgrade_ops.ops = rewrite.operations(script.downgrade_ops.ops, DOWNGRADE)
    return rewrite.template_args()


# --- helpers ----------------------------------------------------------------------------------


def _deferrable(options: dict[str, Any]) -> str:
    """The DEFERRABLE / INITIALLY clauses of a constraint's options."""
    clause = ""
    if options.get("deferrable") is not None:
        clause += " DEFERRABLE" if options["deferrable"] else " NOT DEFERRABLE"
    if options.get("initially"):
        clause += f" INITIALLY {options['initially']}"
    return clause


def _referenced_tables(create: ops.CreateTableOp) -> list[str]:
    keys = [
        key
        for item in create.columns
        for key in (item.foreign_keys if isinstance(item, Column) else [])
    ] + [
        element
        for item in create.columns
        if isinstance(item, ForeignKeyConstraint)
        for element in item.elements
    ]
    return sorted({key.target_fullname.rsplit(".", 1)[0] for key in keys} - {create.table_name})


def _concurrent(create: ops.CreateIndexOp) -> ops.CreateIndexOp:
    create = copy.copy(create)
    create.kw = {**create.kw, "postgresql_concurrently": True}
    create.if_not_exists = True
    return create


def _only_nullable(alter: ops.AlterColumnOp) -> ops.AlterColumnOp:
    only = copy.copy(alter)
    only.modify_type = None
    only.modify_server_default = False
    only.modify_comment = False
    if alter.modify_type is not None:
        only.existing_type = alter.modify_type
    if alter.modify_server_default is not False:
        only.existing_server_default = alter.modify_server_default
    return only


def _modifies_anything(alter: ops.AlterColumnOp) -> bool:
    return (
        alter.modify_type is not None
        or alter.modify_server_default is not False
        or alter.modify_comment is not False
        or alter.modify_nullable is not None
    )


def _table_of(operation: ops.MigrateOperation) -> str:
    if isinstance(operation, ReversibleOp) and isinstance(operation.target, PGTrigger):
        return operation.target.on_entity.partition(".")[2]
    return str(getattr(operation, "table_name", None) or getattr(operation, "source_table", ""))


def _name(operation: ops.MigrateOperation) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(operation).__name__.removesuffix("Op")).lower()


def _default_sql(column: Column[Any]) -> str | None:
    default = column.server_default
    if default is None:
        return None
    argument = getattr(default, "arg", None)
    return argument.text if isinstance(argument, TextClause) else repr(argument)
