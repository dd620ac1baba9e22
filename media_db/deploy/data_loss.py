"""How three of Alembic's own operations run in our revisions (registered by alembic/env.py).

Revisions keep calling plain `op.drop_table`, `op.drop_column` and `op.create_index`; these
implementations wrap Alembic's defaults (Operations.implementation_for, replace=True):

- `drop_table` / `drop_column` first take the ACCESS EXCLUSIVE lock the drop needs anyway, then
  refuse if the table holds a row (the column a value), unless the operator consented. Deciding
  and dropping under one lock means a row that a writer (n8n) commits during a deploy is either
  seen by the check or waits for the drop and fails: it is never dropped unseen. Offline SQL
  carries the same check as a DO block. `refuse_data_loss` (below) runs the same test
  earlier, before any step, so a refusal usually comes before anything changed.
- With consent, the rows (values) about to go are first written to a backup file under that
  same lock (media_db/deploy/backup.py), unless the operator opted out (`-x backup=skip`): nothing
  committed after the backup can be lost by the drop. Offline SQL cannot write files: take a
  backup before applying a script that drops data.
- `create_index(..., postgresql_concurrently=True)` first drops an INVALID leftover of a failed
  earlier build of the same name, which `IF NOT EXISTS` would otherwise keep silently.
"""

import logging
from typing import Any

from alembic.operations import Operations, ops, toimpl
from alembic.util import CommandError
from sqlalchemy import Connection, text

from media_db import transitions
from media_db.deploy import lock_order
from media_db.deploy.backup import BackupUnusable, Run, lost_values

log = logging.getLogger(__name__)

CONSENT_OPTION = "allow_data_loss"  # the MigrationContext option env.py sets from the consent
BACKUP_OPTION = "backup"  # a media_db.deploy.backup.Run, or None when the operator opted out
STEP_OPTION = "running_step"  # a callable: the MigrationInfo of the step running now, or None
HOW_TO_CONSENT = (
    "Back up, then consent with `-x allow-data-loss=true` (ALLOW_DATA_LOSS=1 for make)."
)


def _quote(operations: Operations, name: str) -> str:
    return operations.migration_context.dialect.identifier_preparer.quote(name)


def _refuse_if_holding(operations: Operations, table: str, column: str | None) -> None:
    context = operations.migration_context
    consent, backup = context.opts.get(CONSENT_OPTION), context.opts.get(BACKUP_OPTION)
    what = f"{table}.{column}" if column else table
    holds = "a value" if column else "a row"
    quoted = _quote(operations, table)
    probe = f"SELECT 1 FROM {quoted}" + (
        f" WHERE {_quote(operations, column)} IS NOT NULL" if column else ""
    )
    refusal = (
        f"Refusing to drop {what}: it holds {holds}. The revision was rolled back and nothing "
        f"was dropped. {HOW_TO_CONSENT}"
    )
    if context.as_sql:
        if consent:
            return
        operations.execute(f"LOCK TABLE {quoted} IN ACCESS EXCLUSIVE MODE")
        message = refusal.replace("'", "''")
        operations.execute(
            f"DO $$ BEGIN IF EXISTS ({probe}) THEN RAISE EXCEPTION USING MESSAGE = '{message}'; "
            "END IF; END $$"
        )
        return
    bind = operations.get_bind()
    if bind.scalar(text("SELECT to_regclass(:t)"), {"t": quoted}) is None:
        return  # nothing to protect; the drop itself says what is wrong
    if column:
        quote = context.dialect.identifier_preparer.quote
        probe = f"SELECT 1 FROM {quoted} WHERE {lost_values(bind, quote, table, column)}"
    # Every lock the step's drops need, at once: the drops then wait for nothing more.
    lock_order.acquire(bind, _step_locks(context, bind, table), "ACCESS EXCLUSIVE")
    if consent and backup is None:
        return
    if not bind.scalar(text(f"SELECT EXISTS ({probe})")):
        return
    if not consent:
        raise CommandError(refusal)
    assert backup is not None  # consent without one returned above
    backup.save(bind, context.dialect.identifier_preparer.quote, table, column)


FOREIGN_KEY_PARENTS = text("""
    SELECT DISTINCT confrelid::regclass::text FROM pg_constraint
    WHERE contype = 'f' AND confrelid <> conrelid
      AND conrelid IN (SELECT to_regclass(t) FROM unnest(CAST(:tables AS text[])) t)
""")


def _step_locks(context: Any, bind: Connection, table: str) -> list[str]:
    """`table`, the other tables the running step declares it drops from, and the tables they
    reference (a DROP TABLE locks the referenced table too, to drop its side of the key)."""
    current = context.opts.get(STEP_OPTION)
    step = current() if current is not None else None
    script = step.up_revision if step is not None else None
    declared = _declared(script.module, step.is_upgrade) if step and script else []
    tables = list(dict.fromkeys([table, *(name.partition(".")[0] for name in declared)]))
    existing = [t for t in tables if bind.scalar(text("SELECT to_regclass(:t)"), {"t": t})]
    parents = bind.scalars(FOREIGN_KEY_PARENTS, {"tables": existing})
    return list(dict.fromkeys([*existing, *parents]))


@Operations.implementation_for(ops.DropTableOp, replace=True)
def drop_table(operations: Operations, operation: ops.DropTableOp) -> None:
    _refuse_if_holding(operations, operation.table_name, None)
    toimpl.drop_table(operations, operation)


@Operations.implementation_for(ops.DropColumnOp, replace=True)
def drop_column(operations: Operations, operation: ops.DropColumnOp) -> None:
    _refuse_if_holding(operations, operation.table_name, operation.column_name)
    toimpl.drop_column(operations, operation)


@Operations.implementation_for(ops.CreateIndexOp, replace=True)
def create_index(operations: Operations, operation: ops.CreateIndexOp) -> None:
    if operation.kw.get("postgresql_concurrently") and operation.index_name:
        _drop_invalid_leftover(operations, str(operation.index_name))
    toimpl.create_index(operations, operation)


def _drop_invalid_leftover(operations: Operations, name: str) -> None:
    if operations.migration_context.as_sql:
        operations.execute(transitions.invalid_index_dropped_sql(name))
        return
    probe = transitions.INVALID_INDEX.format(name=transitions.literal(name))
    quoted = _quote(operations, name)
    if operations.get_bind().scalar(text(f"SELECT EXISTS ({probe})")):
        log.warning("Dropping INVALID index %s left by a failed earlier build", name)
        operations.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quoted}")


# --- before any step: what the steps declare they drop ---------------------------------------

# What each revision declares it drops, by direction: "table" or "table.column" names. Revision
# 0001 predates the column-level declarations: its `drops_tables` are what downgrade() drops.
DECLARED_DROPS = {
    False: ("drops_tables", "drops_columns"),  # downgrade()
    True: ("upgrade_drops_tables", "upgrade_drops_columns"),  # upgrade()
}
# Columns an expand/contract drops once its own guard, under the drop's lock, found that they
# hold nothing the other shape lacks (media_db/transitions.py): no consent to ask, so
# not checked here; declared so a reviewer (and tests/deploy) sees every drop.
LOSSLESS_DROPS = {False: "lossless_drops_columns", True: "upgrade_lossless_drops_columns"}
SHOWN_UP_TO = 1_000  # rows counted per table or column at most: the answer stays quick at any size


def declared_drops(steps: list[Any]) -> list[str]:
    """Every table and `table.column` the steps will drop, as their revisions declare them."""
    return [name for step in steps for name in _declared(step.revision.module, step.is_upgrade)]


def _declared(module: Any, upgrade: bool) -> list[str]:
    return [
        name for attribute in DECLARED_DROPS[upgrade] for name in getattr(module, attribute, ())
    ]


def refuse_data_loss(
    connection: Connection, steps: list[Any], consent: bool, backup: Run | None
) -> None:
    """Before any step runs: refuse, changing nothing, if a table or column the steps declare
    they drop holds a row or value, unless the operator consents; with consent, refuse if the
    backup folder cannot take the backup (not writable, less room than the tables take). The
    drop itself checks again under its lock (media_db/deploy/data_loss.py): this early check
    makes a refusal change nothing instead of stopping half-way down."""
    holding = {}
    for name in dict.fromkeys(declared_drops(steps)):
        if (found := _values_held(connection, name)) is not None:
            holding[name] = found
    tables = sorted({name.partition(".")[0] for name in holding})
    size = int(
        connection.scalar(
            text("SELECT sum(pg_table_size(to_regclass(t))) FROM unnest(CAST(:t AS text[])) t"),
            {"t": tables},
        )
        or 0
    )
    connection.rollback()
    if not holding:
        return
    listed = ", ".join(f"{name} ({found})" for name, found in holding.items())
    if not consent:
        raise CommandError(
            f"Refusing to migrate: it would drop {listed}. Nothing was changed. " + HOW_TO_CONSENT
        )
    if backup is not None:
        try:
            backup.check(size)
        except BackupUnusable as error:
            raise CommandError(
                f"Refusing to migrate: it would drop {listed}, and {error}. Nothing was changed. "
                "Free some space or choose another folder (-x backup-dir=..., "
                "MIGRATION_BACKUP_DIR)."
            ) from None
    log.warning("Dropping, with consent: %s", listed)


def _values_held(connection: Connection, name: str) -> str | None:
    """'3 rows' / '1 value' / 'more than 1,000 rows' when `name` holds data; None when it does
    not, or does not exist."""
    table, _, column = name.partition(".")
    exists = connection.scalar(
        text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attnum > 0 AND NOT attisdropped AND (:c = '' OR attname = :c)"
        ),
        {"t": table, "c": column},
    )
    if not exists:
        return None
    quote = connection.dialect.identifier_preparer.quote
    where = f" WHERE {lost_values(connection, quote, table, column)}" if column else ""
    found = int(
        connection.scalar(
            text(f'SELECT count(*) FROM (SELECT FROM "{table}"{where} LIMIT {SHOWN_UP_TO + 1}) s')
        )
        or 0
    )
    if not found:
        return None
    noun = "value" if column else "row"
    if found > SHOWN_UP_TO:
        return f"more than {SHOWN_UP_TO:,} {noun}s"
    return f"{found:,} {noun}{'' if found == 1 else 's'}"
