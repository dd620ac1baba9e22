"""What differs between PostgreSQL majors in the catalogs our tests read, normalised here and
nowhere else, and the head catalog every tested major must give (tests/sql/head_catalog.txt).

Measured on 13.16, 15.18, 16.2, 17.12 and 18.6: format_type, pg_get_expr, pg_get_constraintdef,
pg_get_indexdef and pg_get_triggerdef print our schema identically; the one difference is below.

    python -m tests.majors   # rewrite the reference after a new revision (on the suite's server)
"""

import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, create_engine, pool

from media_db import catalog
from media_db.check import major_of
from tests.helpers import alembic_config
from tests.servers import start_server

REFERENCE = Path(__file__).parent / "sql" / "head_catalog.txt"


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
    """One line per object, tables and objects sorted by name, columns in table order; every
    other kind of object catalog.Table records (constraints, indexes...) by its field name."""
    lines = []
    for name, table in sorted(snapshot.items()):
        lines.append(name)
        lines += [f"  column {column}: {table.columns[column]}" for column in table.column_order]
        for kind in fields(table):
            objects = getattr(table, kind.name)
            if kind.name != "columns" and isinstance(objects, dict):
                lines += [f"  {kind.name} {key}: {objects[key]}" for key in sorted(objects)]
    return "\n".join(lines) + "\n"


def head_catalog(connection: Connection, major: int) -> str:
    return render(normalised(catalog.snapshot(connection), major))


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="media-db-reference-") as workdir,
        start_server(Path(workdir)) as server,
    ):
        url, version = server.create_database(), server.version()
        try:
            with create_engine(url, poolclass=pool.NullPool).connect() as connection:
                command.upgrade(alembic_config(connection), "head")
                REFERENCE.write_text(head_catalog(connection, major_of(version)))
        finally:
            server.drop_database(url)
    print(f"wrote {REFERENCE} from PostgreSQL {version}", file=sys.stderr)


if __name__ == "__main__":
    main()
