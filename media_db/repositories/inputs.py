"""What a caller writes, checked from the models: each generated input (media_db/records.py:
NewMedia, NewAnalysis) is a field per column a caller may set, and each field's check comes from
its Python type and its column (length, bounds), so a column renamed, added or made NOT NULL
reaches the write side with no hand edit."""

import functools
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, bindparam, insert

from media_db import validation
from media_db.errors import InvalidInput
from media_db.statements import bounds, compiled, copy_from_stdin, max_length

Check = Callable[[str, Any], Any]


def _check_of(column: Column[Any], annotation: Any) -> Check:
    """How a value for `column` is checked (InvalidInput naming the field), from its Python
    type as the input declares it (the model's: JSONB is a dict there) and its column type."""
    kinds = [k for k in typing.get_args(annotation) if k is not type(None)] or [annotation]
    python_type = typing.get_origin(kinds[0]) or kinds[0]
    if python_type is str:
        limit = max_length(column)
        return lambda name, value: validation.required_text(name, value, limit)
    if python_type in (int, float, Decimal):
        limits = bounds(column)
        return lambda name, value: validation.number(name, value, limits)
    if python_type is dict:
        return validation.jsonb
    if python_type is uuid.UUID:
        return validation.as_uuid
    if python_type is datetime:
        return _aware
    return lambda name, value: validation.of_type(name, value, python_type)


def _aware(name: str, value: Any) -> datetime:
    """A timestamp is an instant: a naive datetime would be read in the session's time zone."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(name, f"must be a timezone-aware datetime, got {value!r}")
    return value


class Inputs:
    """The write side of `table` for the generated input class `kind`."""

    def __init__(self, table: Table, kind: type[Any], returning: list[Column[Any]]) -> None:
        self.table, self.returning = table, returning
        hints = typing.get_type_hints(kind)
        # (field, its check, whether None leaves the column to its server default, whether it
        # is required: the generator gave it no default), in field order.
        self.fields = [
            (
                field.name,
                _check_of(table.c[field.name], hints[field.name]),
                table.c[field.name].server_default is not None,
                field.default is MISSING,
            )
            for field in fields(kind)
        ]
        self.columns = [name for name, *_ in self.fields]
        self.copy = copy_from_stdin(table, self.columns)

    def row(self, item: Any) -> tuple[Any, ...]:
        """Every field's value after its check, in field order, None where left out (for
        statements that give each column its server default themselves)."""
        values = []
        for name, check, _, required in self.fields:
            value = getattr(item, name)
            if value is None and required:
                raise InvalidInput(name, "is required")
            values.append(None if value is None else check(name, value))
        return tuple(values)

    def checked(self, item: Any) -> dict[str, Any]:
        """Column values after every check (raises InvalidInput naming the field). A None is
        left out where the column has a server default, so that the default applies."""
        values: dict[str, Any] = {}
        for name, check, defaulted, required in self.fields:
            value = getattr(item, name)
            if value is None:
                if required:
                    raise InvalidInput(name, "is required")
                if defaulted:
                    continue
                values[name] = None
            else:
                values[name] = check(name, value)
        return values

    @functools.cache  # noqa: B019 - one Inputs per table, for the life of the process
    def insert(self, columns: tuple[str, ...], **set_: ColumnElement[Any]) -> str:
        """INSERT for exactly these columns (the rest take their server defaults, or `set_`);
        compiled once per column set."""
        values: Mapping[Any, Any] = {
            **{self.table.c[name]: bindparam(name) for name in columns},
            **{self.table.c[name]: value for name, value in set_.items()},
        }
        return compiled(insert(self.table).values(values).returning(*self.returning))
