"""`make verify`: is the live schema exactly what the models would create?

`alembic check` compares through autogenerate, which is blind to some details (index sort order,
expression defaults it cannot parse). This builds the models' schema for real in a scratch schema,
inside a transaction that is always rolled back, and compares both catalogs object by object.
Nothing is left behind; the scratch schema never becomes visible to other sessions. Then
`alembic check` itself runs, in this process.

An expand/contract in flight (media_db/transitions.py) whose marker the models still
carry is reported as contracting, not as drift: the old column of a rename or a type change, its
indexes and constraints, and the sync trigger.
"""

import sys
from collections.abc import Callable

import alembic.config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from media_db import dependents, transitions
from media_db.connect import open_connection
from media_db.deploy import catalog, history_shape, project
from media_db.errors import EXIT_UNAVAILABLE, DatabaseUnavailable
from media_db.models import Base

SCRATCH_SCHEMA = "media_analysis_verify_scratch"


def drift_from(connection: Connection, build: Callable[[Connection], object]) -> list[str]:
    """Differences between our live tables and what `build` creates, one line each.

    `build` runs in a scratch schema inside a transaction that is always rolled back: the
    scratch schema never exists for anyone else, and nothing is left behind."""
    try:
        schema = str(connection.scalar(text("SELECT current_schema()")))
        # Ours only: reading n8n's tables' defaults would lock them, for nothing.
        live = catalog.snapshot(connection, schema, tables=set(Base.metadata.tables))
        for moving in transitions.contracting(connection, Base.metadata):
            left = live.get(moving.table, catalog.Table())
            left.triggers.pop(moving.name, None)
            if moving.old is not None:
                left.columns.pop(moving.old, None)
                # Its indexes and constraints (PostgreSQL 18's NOT NULL among them) go with it.
                for objects in (left.constraints, left.indexes):
                    for name in [
                        n for n, d in objects.items() if dependents.on_column(d, moving.old)
                    ]:
                        del objects[name]
                _primary_key_stand_in(left, moving)
                _references_stand_in(live, moving)
        live_functions = catalog.functions(connection, schema)
        connection.execute(text(f"CREATE SCHEMA {SCRATCH_SCHEMA}"))
        connection.execute(text(f"SET LOCAL search_path TO {SCRATCH_SCHEMA}"))
        build(connection)
        expected = catalog.snapshot(connection, SCRATCH_SCHEMA)
        expected_functions = catalog.functions(connection, SCRATCH_SCHEMA)
    finally:
        connection.rollback()
    return catalog.differences(
        expected, live, set(Base.metadata.tables)
    ) + catalog.function_differences(expected_functions, live_functions)


def _primary_key_stand_in(left: catalog.Table, moving: transitions.Transition) -> None:
    """A renamed primary key stays on the old column until the contract: its unique index over
    the new column (autogen.keys.primary_key_index) stands for it."""
    key = str(Base.metadata.tables[moving.table].primary_key.name)
    stand_in = transitions.shadow_name(key)
    if moving.kind != transitions.RENAME or stand_in not in left.indexes:
        return
    index = left.indexes.pop(stand_in)
    left.constraints[key] = f"PRIMARY KEY ({transitions.quote(moving.column)})"
    left.indexes[key] = index.replace(transitions.quote(stand_in), transitions.quote(key), 1)


def _references_stand_in(live: catalog.Catalog, moving: transitions.Transition) -> None:
    """The foreign keys referencing a renamed key keep referencing its old name until the
    contract; their copies over the new name (`<name>__new`) stand for them."""
    if moving.kind != transitions.RENAME:
        return
    referencing = f" REFERENCES {transitions.quote(moving.table)}("
    for table in live.values():
        for name, definition in list(table.constraints.items()):
            if referencing not in definition or not name.endswith("__new"):
                continue
            original = name.removesuffix("__new")
            if original in table.constraints and transitions.shadow_name(original) == name:
                table.constraints[original] = table.constraints.pop(name)


def schema_drift(connection: Connection) -> list[str]:
    """Differences between the live tables and the models; [] when identical."""
    return drift_from(
        connection, lambda scratch: Base.metadata.create_all(scratch, checkfirst=False)
    )


def revision_lag(connection: Connection) -> str | None:
    script = ScriptDirectory.from_config(project.alembic_config())
    current, heads = set(project.current_heads(connection)), set(script.get_heads())
    if current == heads:
        return None
    return (
        f"database is at {', '.join(sorted(current)) or 'no revision'}, "
        f"head is {', '.join(sorted(heads))}: run `make upgrade`"
    )


def main() -> int:
    try:
        connection = open_connection("verify")
    except DatabaseUnavailable as error:
        print(error, file=sys.stderr)
        return EXIT_UNAVAILABLE
    if shape := history_shape.problems(ScriptDirectory.from_config(project.alembic_config())):
        print("Schema verification failed:", *shape, sep="\n  ", file=sys.stderr)
        return 1
    with connection:
        if lag := revision_lag(connection):
            print(f"Schema verification failed: {lag}", file=sys.stderr)
            return 1
        contracting = transitions.contracting(connection, Base.metadata)
        drift = schema_drift(connection)
    for moving in contracting:
        print(f"Contracting (expand/contract in flight, not drift): {transitions.describe(moving)}")
    if drift:
        print(
            "Schema verification failed: the live schema differs from the models:",
            *drift,
            sep="\n  ",
            file=sys.stderr,
        )
        return 1
    print(
        "Live schema matches the models (tables, columns, defaults, constraints, indexes, "
        "triggers, functions)."
    )
    return 0


def then_alembic_check() -> None:
    """`alembic check` as its command line runs it (its FAILED line, its exit code), in this
    process: a second interpreter would load SQLAlchemy and the models again."""
    alembic.config.main(["-c", str(project.alembic_ini()), "check"], prog="alembic")


if __name__ == "__main__":
    if code := main():
        sys.exit(code)
    then_alembic_check()
