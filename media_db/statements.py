"""Statements built from the models' tables with SQLAlchemy Core, compiled once at import into
the SQL text psycopg runs (`%(name)s` parameters): no per-call cost, and a column added to a
model reaches every SELECT and RETURNING list (through its record, see media_db/records.py)."""

from dataclasses import fields
from typing import Any

from sqlalchemy import Column, ColumnElement, Index, String, Table, literal, literal_column
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.sql.elements import ClauseElement

from models import Base

DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


def table_of(model: type[Base]) -> Table:
    return Base.metadata.tables[model.__tablename__]


def compiled(statement: ClauseElement) -> str:
    """The SQL text; every parameter must be a named one the caller passes (a value bound in the
    statement would be lost with the compiled object, so it is refused here, at import)."""
    result = statement.compile(dialect=DIALECT)
    if bound := sorted(name for name, value in result.params.items() if value is not None):
        raise ValueError(f"values bound inside a compiled statement: {bound}")
    return str(result)


def record_columns(table: Table, record: type[Any]) -> list[Column[Any]]:
    """The table's columns that `record` holds, in the record's (= the table's) order."""
    return [table.c[field.name] for field in fields(record)]


def max_length(column: ColumnElement[Any]) -> int | None:
    """VARCHAR(n)'s n, from the model: the limit the checks enforce before the database does."""
    return column.type.length if isinstance(column.type, String) else None


def constant(value: str) -> ColumnElement[Any]:
    """A quoted SQL literal written into the statement (a status the statement always sets)."""
    rendered = literal(value, String()).compile(
        dialect=DIALECT, compile_kwargs={"literal_binds": True}
    )
    return literal_column(str(rendered))


def index(table: Table, name: str) -> Index:
    found = [candidate for candidate in table.indexes if candidate.name == name]
    if not found:
        raise LookupError(f"{table.name} has no index {name!r} in the models")
    return found[0]
