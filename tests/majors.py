"""What differs between PostgreSQL majors in the catalogs our tests read, normalised here and
nowhere else.

Measured on 13.16, 15.18, 16.2, 17.12 and 18.6: format_type, pg_get_expr, pg_get_constraintdef,
pg_get_indexdef and pg_get_triggerdef print our schema identically; the one difference is below.
"""

from dataclasses import fields, replace

from sqlalchemy import Connection, text

from media_db.deploy import catalog
from media_db.models import Base


def not_null_constraints(snapshot: catalog.Catalog, major: int) -> dict[str, set[str]]:
    """Per table, the constraints that only restate a column's NOT NULL.

    PostgreSQL 18 catalogues every NOT NULL as a constraint of its own, named
    `<table>_<column>_not_null`, which pg_get_constraintdef prints as `NOT NULL <column>`;
    13 to 17 keep NOT NULL only in pg_attribute.attnotnull, which Column.not_null shows on
    every major. Only those exact restatements count: any other constraint stays compared."""
    if major < 18:
        return {name: set() for name in snapshot}
    restated: dict[str, set[str]] = {}
    for name, table in snapshot.items():
        restated[name] = set()
        for constraint, definition in table.constraints.items():
            column = table.columns.get(definition.removeprefix("NOT NULL "))
            if (
                definition.startswith("NOT NULL ")
                and column is not None
                and column.not_null
                and constraint == f"{name}_{definition.removeprefix('NOT NULL ')}_not_null"
            ):
                restated[name].add(constraint)
    return restated


def normalised(snapshot: catalog.Catalog, major: int) -> catalog.Catalog:
    """The snapshot as 13 to 17 describe it, whatever the major."""
    restated = not_null_constraints(snapshot, major)
    return {
        name: replace(
            table,
            constraints={
                key: value for key, value in table.constraints.items() if key not in restated[name]
            },
        )
        for name, table in snapshot.items()
    }


def render(snapshot: catalog.Catalog) -> str:
    """One line per object, tables and objects sorted by name (columns too); every
    other kind of object catalog.Table records (constraints, indexes...) by its field name."""
    lines = []
    for name, table in sorted(snapshot.items()):
        lines.append(name)
        # By name: ADD COLUMN appends, so a column added mid-model lands last in the table.
        lines += [f"  column {column}: {table.columns[column]}" for column in sorted(table.columns)]
        for kind in fields(table):
            objects = getattr(table, kind.name)
            if kind.name != "columns" and isinstance(objects, dict):
                lines += [f"  {kind.name} {key}: {objects[key]}" for key in sorted(objects)]
    return "\n".join(lines) + "\n"


def head_catalog(connection: Connection, major: int) -> str:
    """Our tables, as this server describes them, normalised and rendered."""
    ours = set(Base.metadata.tables)
    return render(normalised(catalog.snapshot(connection, tables=ours), major))


def models_catalog(connection: Connection, major: int) -> str:
    """What the models build on this server (in a scratch schema, rolled back), likewise."""
    try:
        connection.execute(text("CREATE SCHEMA media_db_majors_scratch"))
        connection.execute(text("SET LOCAL search_path TO media_db_majors_scratch"))
        Base.metadata.create_all(connection)
        built = catalog.snapshot(connection, "media_db_majors_scratch")
    finally:
        connection.rollback()
    return render(normalised(built, major))
