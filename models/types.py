"""Column types that carry Python meaning over a plain SQL type."""

from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Dialect, String
from sqlalchemy.types import TypeDecorator

E = TypeVar("E", bound=StrEnum)


class StatusColumn(TypeDecorator[E]):
    """VARCHAR in the database (raw-SQL writers such as n8n keep writing strings), a StrEnum in
    Python. An unknown value is refused before it reaches the database, naming the allowed ones."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        try:
            return str(self.enum(value))
        except ValueError:
            allowed = ", ".join(self.enum)
            raise ValueError(
                f"{value!r} is not a valid {self.enum.__name__}; expected one of: {allowed}"
            ) from None

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)
