"""Statements built from the models' tables with SQLAlchemy Core, compiled once at import into
the SQL text psycopg runs (`%(name)s` parameters): no per-call cost, and a column added to a
model reaches every SELECT and RETURNING list (through its record, see media_db/records.py)."""

import math
import re
from collections.abc import Sequence
from dataclasses import fields
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    literal,
    literal_column,
)
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeDecorator

from media_db.models import Base
from media_db.validation import Bounds

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


# Each integer type's width in bits (a subclass before its base: BigInteger is an Integer).
INTEGER_BITS = ((SmallInteger, 16), (BigInteger, 64), (Integer, 32))
# A CHECK the data layer applies itself: `column >= n` (or >, <=, <). Others are the server's.
SIMPLE_CHECK = re.compile(r"\s*(\w+)\s*(>=|>|<=|<)\s*(-?\d+(?:\.\d+)?)\s*", re.ASCII)


def bounds(column: Column[Any]) -> Bounds:
    """What a numeric column takes, from the model: its type (an integer type's range, any
    finite float, or NUMERIC(p, s)'s range) narrowed by its simple CHECKs."""
    kind = column.type.impl_instance if isinstance(column.type, TypeDecorator) else column.type
    bits = next((n for base, n in INTEGER_BITS if isinstance(kind, base)), None)
    if bits is not None:
        found = Bounds(whole=True, low=-(2 ** (bits - 1)), high=2 ** (bits - 1) - 1)
    elif isinstance(kind, Float):
        found = Bounds(whole=False)
    elif isinstance(kind, Numeric):  # NUMERIC(p, s) holds under 10^(p - s), once rounded
        digits = None if kind.precision is None else kind.precision - (kind.scale or 0)
        scale = None if kind.precision is None else kind.scale or 0
        found = Bounds(whole=False, decimal=True, scale=scale)
        if digits is not None:
            found = found.narrowed(">", -(10**digits)).narrowed("<", 10**digits)
    else:
        raise TypeError(f"{column} is {kind}, neither an integer nor a numeric type")
    for operator, limit in _simple_checks(column):
        if found.whole:
            found = found.narrowed(*_closed(operator, limit))
        else:
            found = found.narrowed(operator, float(limit))
    return found


def _closed(operator: str, limit: Decimal) -> tuple[str, int]:
    """An integer column's CHECK as a closed bound: `> 0` is `>= 1`, `<= 9.5` is `<= 9`."""
    if operator.startswith(">"):
        return ">=", math.floor(limit) + 1 if operator == ">" else math.ceil(limit)
    return "<=", math.ceil(limit) - 1 if operator == "<" else math.floor(limit)


def _simple_checks(column: Column[Any]) -> list[tuple[str, Decimal]]:
    checks = []
    for constraint in column.table.constraints:
        if isinstance(constraint, CheckConstraint):
            found = SIMPLE_CHECK.fullmatch(str(constraint.sqltext))
            if found and found[1] == column.name:
                checks.append((found[2], Decimal(found[3])))
    return checks


def constant(value: str) -> ColumnElement[Any]:
    """A quoted SQL literal written into the statement (a status the statement always sets)."""
    rendered = literal(value, String()).compile(
        dialect=DIALECT, compile_kwargs={"literal_binds": True}
    )
    return literal_column(str(rendered))


def copy_from_stdin(table: Table, keys: Sequence[str]) -> str:
    """COPY into `table` of the columns with these keys, by their names (a rename that kept the
    key the code uses changes the name only)."""
    quote = DIALECT.identifier_preparer.quote
    names = ", ".join(quote(table.c[key].name) for key in keys)
    return f"COPY {quote(table.name)} ({names}) FROM STDIN"


def index(table: Table, name: str) -> Index:
    found = [candidate for candidate in table.indexes if candidate.name == name]
    if not found:
        raise LookupError(f"{table.name} has no index {name!r} in the models")
    return found[0]
