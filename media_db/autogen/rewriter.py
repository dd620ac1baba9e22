"""`make revision` writes the lock-safe form of every operation on an existing table.

Autogenerate proposes plain operations; on a populated table shared with n8n several of them
stop writes for a whole scan or rewrite. `rewrite()` runs in process_revision_directives and:

- turns each operation into its lock-safe form (the table in docs/schema-changes.md), by the
  rule registered for its kind (media_db/autogen/rules/, as Alembic's `Rewriter.rewrites`);
- writes as expand/contract (media_db/autogen/expand_contract.py) what has no lock-safe form in
  one step: a rename (the new column marked `info={"renamed_from": old}`), a NOT NULL column with
  no default (marked `info={"backfill": expression}`), a volatile default, a rewriting type
  change (optionally `info={"using": expression, "down": expression}`); and the contract once
  the marker goes;
- refuses, naming the marker to add or the steps to write instead, the rest: a rename or a NOT
  NULL column without its marker, a type change that has no way back or whose key, foreign key
  or view cannot follow the column, a generated column;
- fills in what the reviewer and the tools need: one `Locks:` line per operation, the tables and
  columns each direction drops (read by the data-loss guard, media_db/deploy/data_loss.py), and the
  `make lint-sql` findings that the safe forms make on purpose, each with its reason.

Every step that commits on its own (a concurrent build, a VALIDATE) is written so that running
the revision again after a failure at any point finishes the job instead of failing on what the
first run left. Operations on a table created or dropped in the same step stay plain: nobody
else can be using a table that does not exist yet, and a table being dropped is locked anyway.
An operation no rule covers is written as proposed, its `Locks:` line asking for a review by
hand. This module keeps the walk, the dispatch and the bookkeeping.
"""

import re
import subprocess
import sys
from pathlib import Path

from alembic.operations import ops
from sqlalchemy import Column, Connection, ForeignKeyConstraint, MetaData

import media_db
from media_db import transitions
from media_db.autogen import expand_contract
from media_db.autogen.locks import GUARDED_DROP
from media_db.autogen.ops import AutocommitBlock, Backfill, Kept
from media_db.autogen.rules import (
    RULES,
    columns,
    constraints,
    entities,
    table_of,
)
from media_db.autogen.state import DOWNGRADE, UPGRADE, Rewrite, Undoable
from media_db.models.migration_history import SURVIVES_DOWNGRADE
from media_db.transitions import RENAME

# Importing the rule modules registers their rules in RULES.
RULE_MODULES = (columns, constraints, entities)
# What the upgrade's expands and contracts return for the way down, by (table, column).
Undo = dict[tuple[str, str | None], Undoable]


def operations(
    rw: Rewrite, operations: list[ops.MigrateOperation], direction: str, undo: Undo
) -> list[ops.MigrateOperation]:
    """The walk: every operation (those inside a table's group one by one) through `one`. The
    upgrade's pass fills `undo` (what its expands and contracts return for the way down); the
    downgrade's writes it for the same columns."""
    created_or_dropped = {
        operation.table_name
        for operation in operations
        if isinstance(operation, ops.CreateTableOp | ops.DropTableOp)
    }
    if direction == UPGRADE:
        for operation in operations:
            for step in getattr(operation, "ops", []):
                if isinstance(step, ops.DropColumnOp):
                    expand_contract.goes_with_its_column(rw, step.table_name, step.column_name)
                if not isinstance(step, ops.AddColumnOp):
                    continue
                found = transitions.marker(step.column)
                if found is not None and found[0] == RENAME:
                    expand_contract.keep_until_contract(
                        rw, step.table_name, step.column.name, found[1]
                    )
    rewritten: list[ops.MigrateOperation] = []
    for operation in operations:
        if isinstance(operation, ops.ModifyTableOps):
            # A table created in this revision has nothing to lose (nor to reflect).
            if direction == UPGRADE and operation.table_name not in created_or_dropped:
                columns.refuse_renames(rw, operation)
            inner = [
                safe
                for step in operation.ops
                for safe in one(rw, step, direction, created_or_dropped, undo)
            ]
            rewritten.append(
                ops.ModifyTableOps(operation.table_name, inner, schema=operation.schema)
            )
        else:
            rewritten += one(rw, operation, direction, created_or_dropped, undo)
    return rewritten


def one(
    rw: Rewrite, operation: ops.MigrateOperation, direction: str, fresh: set[str], undo: Undo
) -> list[ops.MigrateOperation]:
    """The dispatch: what is written in `operation`'s place, by its kind's rule; a table made
    or dropped in this revision (`fresh`) and its operations stay plain. On the way down, a
    column's operation gives way to what the upgrade's expand or contract of it returned."""
    table = table_of(operation)
    column = (table, _column_of(operation))
    undone = undo.pop(column, None) if direction == DOWNGRADE else None
    if undone is not None and not undone.then_its_own:
        return undone.undo
    kept = (getattr(operation, "info", None) or {}).get(SURVIVES_DOWNGRADE)
    if isinstance(operation, ops.CreateTableOp) and kept:
        # A downgrade below this revision keeps the table, so upgrading again finds it.
        operation.if_not_exists, operation.info = True, {}
        rw.lock(
            direction,
            f"create_table {table} IF NOT EXISTS: a new table, nothing existing is locked",
        )
        return [operation]
    if isinstance(operation, ops.CreateTableOp):
        referenced = _referenced_tables(operation)
        rw.lock(
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
        rw.lock(direction, f"{table} is kept, nothing is locked")
        return [Kept(f"{table} is kept: {kept}.")]
    if isinstance(operation, ops.DropTableOp):
        rw.drop(direction, "tables", table, "ban-drop-table")
        rw.lock(direction, f"drop_table {table}: {GUARDED_DROP}")
        return [operation]
    if table in fresh:
        rw.lock(direction, f"{_name(operation)} on {table}: goes with its table (same step)")
        return [operation]
    rule = RULES.get(type(operation))
    if rule is None:
        rw.lock(
            direction,
            f"{_name(operation)} on {table}: not judged by make revision, review its locks by hand",
        )
        return [operation]
    written = rule(rw, operation, direction)
    if isinstance(written, Undoable):
        undo[column] = written
        return written.steps
    return [*(undone.undo if undone else []), *written]


def rewrite(
    script: ops.MigrationScript, connection: Connection, metadata: MetaData | None = None
) -> dict[str, str]:
    """Rewrite `script`'s operations in place into their lock-safe forms; return the template
    arguments (`locks`, `declarations`), or raise CommandError listing every refused change."""
    state = Rewrite(connection, script.rev_id or "", metadata)
    assert script.upgrade_ops is not None
    assert script.downgrade_ops is not None
    undo: Undo = {}
    script.upgrade_ops.ops = operations(state, script.upgrade_ops.ops, UPGRADE, undo)
    script.downgrade_ops.ops = operations(state, script.downgrade_ops.ops, DOWNGRADE, undo)
    state.refusals += cut_over_too_early(state, script.upgrade_ops.ops)
    if script.upgrade_ops.ops:  # autogenerated (a hand-written revision has no database)
        state.refusals += renamed_onto_a_column(state)
        if broken := _data_layer_breaks():
            state.refusals.append(broken)
    return state.template_args()


def cut_over_too_early(rw: Rewrite, upgrade: list[ops.MigrateOperation]) -> list[str]:
    """A type change's cutover commits with the next step that commits on its own (a
    concurrent build, a batch, a VALIDATE): a failure from there on would leave the column cut
    over, and running the revision again would build its shadow a second time. So nothing
    after a cutover may commit on its own: the type change goes last, or alone."""
    steps = [s for o in upgrade for s in (o.ops if isinstance(o, ops.ModifyTableOps) else [o])]
    refusals = []
    for where, cutover in rw.cutovers:
        at = next(i for i, step in enumerate(steps) if step is cutover)
        if any(isinstance(step, AutocommitBlock | Backfill) for step in steps[at + 1 :]):
            refusals.append(
                f"{where}: steps after its cutover commit on their own, and a failure there "
                "would leave the column cut over, which running the revision again cannot "
                "finish. Change the type in a revision of its own, or make it the revision's "
                "last change (its column last in the model)"
            )
    return refusals


def renamed_onto_a_column(rw: Rewrite) -> list[str]:
    """A `renamed_from` marker whose new name the table already has, with no rename of it in
    flight: two columns swapping names, or one taking another's. Autogenerate sees no column
    added, so no expand is written, while the data layer would at once read and write each
    value under the other name."""
    in_flight = {(moving.table, moving.column) for moving in rw.in_flight.values()}
    refusals = []
    for (table, new), (kind, old) in transitions.marked(rw.metadata).items():
        if kind != RENAME or (table, new) in in_flight:
            continue
        present = {column["name"] for column in rw.reflected_columns(table)}
        if {new, old} <= present:
            refusals.append(
                f"{table}.{new}: marked renamed from {old}, but {table} has both columns: a "
                f"rename onto a column that exists (two names swapped) would put each value "
                f"under the other name. Rename {new} out of the way first (a rename of its own "
                "to a free name, contracted), then this one"
            )
    return refusals


def _data_layer_breaks() -> str | None:
    """Whether the records regenerated from these models would break the data layer's import
    (`make records --check`); the post-write hook would refuse them only once the revision is
    written. In this process when it has not loaded the data layer (autogenerate does not):
    the data layer is imported from the new records, then forgotten, as `make records` does,
    which spares `make revision` an interpreter (about 0.7 s of CPU)."""
    # Developer code, which `make revision` runs in the checkout: imported on use only.
    from media_db.dev import gen_records

    if set(sys.modules) & {"media_db.records", *gen_records.DATA_LAYER}:
        return _data_layer_breaks_in_a_process()
    try:
        records = gen_records.render()
    except gen_records.UntypedColumn as error:
        return str(error).splitlines()[-1]
    broken = gen_records.data_layer_breaks(records)
    return None if broken is None else f"{broken}."


def _data_layer_breaks_in_a_process() -> str | None:
    done = subprocess.run(
        [sys.executable, "-m", "media_db.dev.gen_records", "--check"],
        cwd=Path(media_db.__file__).parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return None
    said = done.stderr.strip().splitlines()
    return (
        said[-1].removeprefix("make records: ") if said else f"make records: exit {done.returncode}"
    )


# --- helpers --------------------------------------------------------------------------------------


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


def _column_of(operation: ops.MigrateOperation) -> str | None:
    if isinstance(operation, ops.AddColumnOp):
        return str(operation.column.name)
    return getattr(operation, "column_name", None)


def _name(operation: ops.MigrateOperation) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(operation).__name__.removesuffix("Op")).lower()
