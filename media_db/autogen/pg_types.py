"""PostgreSQL's column types as `make revision` compares them: which type changes leave the
table as it is, and which rewrite it."""

import re
from typing import Any

from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

LENGTH = re.compile(r"(VARCHAR|NUMERIC)(?:\((\d+)(?:, *(\d+))?\))?")


def sql_type(type_: TypeEngine[Any] | Any) -> str:
    """The type as PostgreSQL spells it, so that a model's type and a reflected one compare."""
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return str(type_.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def binary_compatible(old: str, new: str) -> bool:
    """Type changes PostgreSQL makes without a rewrite or a scan: varchar widened or unbounded,
    varchar to text and back to unbounded varchar, numeric precision raised (same scale)."""
    if old == new or (old, new) in {("VARCHAR", "TEXT"), ("TEXT", "VARCHAR")}:
        return True
    if old.startswith("VARCHAR") and new == "TEXT":
        return True
    before, after = LENGTH.fullmatch(old), LENGTH.fullmatch(new)
    if not (before and after) or before[1] != after[1]:
        return False
    if after[2] is None:
        return True  # unbounded: no limit to check
    if before[2] is None:
        return False
    if before[1] == "NUMERIC" and before[3] != after[3]:
        return False  # another scale changes every stored value
    return int(after[2]) >= int(before[2])


# Widenings whose way back is a plain cast that gives every old value again.
WIDER = {
    "SMALLINT": ("INTEGER", "BIGINT", "NUMERIC"),
    "INTEGER": ("BIGINT", "NUMERIC"),
    "BIGINT": ("NUMERIC",),
    "REAL": ("DOUBLE PRECISION",),
}


def exact_round_trip(old: str, new: str) -> bool:
    """Whether CAST(new AS old) gives back every value CAST(old AS new) made: a type change
    needs no `down` marker then."""
    return binary_compatible(old, new) or new in WIDER.get(old, ())
