"""Table storage parameters (`postgresql_with={...}` on a model) under autogenerate.

Autogenerate does not compare them, so a per-table autovacuum setting declared in the models
would never reach a revision, nor be noticed by `alembic check` when the server's differs. This
Alembic plugin compares each table's `postgresql_with` with pg_class.reloptions and proposes
`ALTER TABLE … SET (…)` / `RESET (…)`, which media_db/autogen/rules/entities.py writes into the
revision as plain SQL.
"""

import sys
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import PriorityDispatchResult
from sqlalchemy import Table, text

PLUGIN = __name__  # what autogenerate_plugins names it by


class SetStorageParametersOp(ops.MigrateOperation):
    """Set some storage parameters of a table and reset others."""

    def __init__(self, table_name: str, before: dict[str, str], after: dict[str, str]) -> None:
        self.table_name = table_name
        self.before, self.after = before, after
        self.set_ = {key: value for key, value in after.items() if before.get(key) != value}
        self.reset = sorted(before.keys() - after.keys())

    def to_diff_tuple(self) -> tuple[Any, ...]:
        """What `alembic check` reports."""
        return ("modify_storage_parameters", self.table_name, self.before, self.after)

    def reverse(self) -> "SetStorageParametersOp":
        return SetStorageParametersOp(self.table_name, self.after, self.before)

    def statements(self) -> list[str]:
        assigned = ", ".join(f"{key} = {value}" for key, value in sorted(self.set_.items()))
        return [
            *([f"ALTER TABLE {self.table_name} SET ({assigned})"] if self.set_ else []),
            *(
                [f"ALTER TABLE {self.table_name} RESET ({', '.join(self.reset)})"]
                if self.reset
                else []
            ),
        ]


def declared(table: Table) -> dict[str, str]:
    """The model's `postgresql_with`, as PostgreSQL stores it (values as text)."""
    given: dict[str, Any] = table.dialect_options["postgresql"]["with"] or {}
    return {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in given.items()
    }


def on_server(connection: Any, table: str) -> dict[str, str]:
    options = connection.scalar(
        text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
    )
    return dict(option.split("=", 1) for option in options or [])


def _compare(
    autogen_context: AutogenContext,
    upgrade_ops: ops.ModifyTableOps,
    schema: str | None,
    table_name: str,
    connection_table: Table | None,
    metadata_table: Table | None,
) -> PriorityDispatchResult:
    if connection_table is None or metadata_table is None:
        return PriorityDispatchResult.CONTINUE  # a new or dropped table carries its own
    wanted = declared(metadata_table)
    found = on_server(autogen_context.connection, table_name)
    if wanted != found:
        upgrade_ops.ops.append(SetStorageParametersOp(table_name, found, wanted))
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    plugin.add_autogenerate_comparator(_compare, "table", "storage_parameters")


Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN)
