"""The guard of a step that drops a column without asking for consent (an expand's way down, a
contract: media_db/autogen/expand_contract.py): under the drop's lock it refuses, rolling back,
while a row holds what the kept column does not give back; it reads a partial index of those
rows, built CONCURRENTLY just before, where the check can be indexed."""

from alembic.operations import ops
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from media_db import transitions
from media_db.autogen.locks import CONCURRENT, GUARD_INDEXED, GUARD_SCAN, LOSSLESS_DROP, SYNC_DROP
from media_db.autogen.ops import Comment, Statement, WhileColumnBlock
from media_db.autogen.state import UPGRADE, Rewrite
from media_db.transitions import RENAME, Transition, quote


def guard_index(
    rw: Rewrite,
    moving: Transition,
    dropped: str,
    kept: str,
    direction: str,
    *,
    renamed: tuple[str, str] | None = None,
    added: dict[str, str] | None = None,
    until_gone: str | None = None,
) -> tuple[list[ops.MigrateOperation], str | None]:
    """The first steps of a way down or a contract that drops `dropped` (lossless_drop): the
    guard's rows indexed CONCURRENTLY, so that under the drop's lock the guard reads an index
    and not the table; and `kept` as the index's predicate has it, which the guard must use
    to match the index. PostgreSQL writes it, on a temporary copy of the table taken to the
    shape it will have then (`renamed`: a column renamed; `added`: columns added, or given
    another type, by their SQL type): over the columns' names then, with no subquery. Only
    where it can be indexed (every function in `kept` IMMUTABLE: `to_jsonb`, say, is not);
    elsewhere no step and None, and the guard reads the table. Run only while `until_gone`
    (else `dropped`) is there: a re-run after the drop committed skips it."""
    table = moving.table
    probe = transitions.identifier(f"media_db_probe_{table}")
    expression = transitions.identifier(f"{probe}_kept")
    present = {column["name"] for column in rw.reflected_columns(table)}
    reshaped = [
        f"CREATE TEMPORARY TABLE {quote(probe)} (LIKE {quote(table)})",
        f"CREATE INDEX {quote(expression)} ON {quote(probe)} (({kept}))",
    ]
    if renamed is not None:
        before, after = renamed
        reshaped.append(
            f"ALTER TABLE {quote(probe)} RENAME COLUMN {quote(before)} TO {quote(after)}"
        )
        present = (present - {before}) | {after}
    for column, type_ in (added or {}).items():
        reshaped.append(
            f"ALTER TABLE {quote(probe)} ALTER COLUMN {quote(column)} TYPE {type_} USING NULL"
            if column in present
            else f"ALTER TABLE {quote(probe)} ADD COLUMN {quote(column)} {type_}"
        )
    with rw.connection.begin_nested() as savepoint:
        try:
            for sql in reshaped:
                rw.connection.exec_driver_sql(sql)
            flat = str(
                rw.connection.execute(
                    text("SELECT pg_get_indexdef(to_regclass(:index), 1, false)"),
                    {"index": quote(expression)},
                ).scalar_one()
            )
            sql = transitions.guard_index_sql(table, dropped, flat, probe=probe)
            rw.connection.exec_driver_sql(sql)
        except DBAPIError:
            return [], None
        finally:
            savepoint.rollback()
    name = transitions.guard_name(table, dropped)
    rw.lock(direction, f"create_index {name} CONCURRENTLY on {table}: {CONCURRENT}")
    return [
        Comment(
            f"The guard's index: the rows where {dropped} holds what {flat} does not give back "
            "(normally none), read under the drop's lock instead of the table."
        ),
        WhileColumnBlock(
            f"SELECT {transitions.column_there(table, until_gone or dropped)}",
            [
                Statement(transitions.invalid_index_dropped_sql(name)),
                Statement(transitions.guard_index_sql(table, dropped, flat)),
            ],
        ),
    ], flat


def lossless_drop(
    rw: Rewrite,
    moving: Transition,
    dropped: str,
    kept: str,
    direction: str,
    before: list[str] | None = None,
    until_gone: str | None = None,
    indexed: bool = False,
) -> list[ops.MigrateOperation]:
    """Drop `dropped` and the sync trigger, no consent asked: the guard refuses, under the
    drop's lock, if `dropped` holds a value that `kept` does not give back. `before`: SQL run
    under the same lock just before the column goes. `until_gone`: a column the same
    transaction renames or drops later, where later steps of the revision can cut it after it
    committed: the guard, `before` and the drop then run only while that column is there, so a
    re-run skips them (transitions.while_column_sql). `indexed`: guard_index came first."""

    def once(sql: str) -> Statement:
        if until_gone is None:
            return Statement(sql)
        return Statement(transitions.while_column_sql(moving.table, until_gone, sql))

    rw.lock(
        direction,
        f"drop {moving.table}.{dropped} and the sync trigger {moving.name}: "
        + (GUARD_INDEXED if indexed else GUARD_SCAN),
    )
    rw.waive(direction, "ban-drop-column", LOSSLESS_DROP)
    rw.waive(direction, "ban-drop-function", SYNC_DROP)
    prefix = "upgrade_" if direction == UPGRADE else ""
    rw.drops[f"{prefix}lossless_drops_columns"].append(f"{moving.table}.{dropped}")
    lock, guard = transitions.guarded_drop_sql(
        moving.table,
        dropped,
        kept,
        kept_column=moving.kind == RENAME and moving.back is None,
        indexed=indexed,
    )
    return [
        Statement(lock),
        once(guard),
        *(Statement(sql) for sql in moving.drop_sql()),
        *map(once, before or []),
        once(f"ALTER TABLE {quote(moving.table)} DROP COLUMN {quote(dropped)}"),
    ]
