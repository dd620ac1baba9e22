"""Checks on caller input, run before anything is written. Each failure names the field."""

import json
import math
import uuid
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from media_db.errors import InvalidInput

E = TypeVar("E", bound=StrEnum)


def as_uuid(field: str, value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a UUID") from None


def as_status(enum: type[E], field: str, value: object) -> E:
    if not isinstance(value, str):
        raise InvalidInput(field, f"{value!r} is not a status name")
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(enum)
        raise InvalidInput(field, f"{value!r} is not one of: {allowed}") from None


def non_negative(field: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, f"{value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(field, f"must be a finite number >= 0, got {value!r}")


def positive(field: str, value: float | None) -> None:
    non_negative(field, value)
    if value == 0:
        raise InvalidInput(field, "must be > 0, got 0")


def required_text(field: str, value: object, max_length: int | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string")
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(field, f"must be at most {max_length} characters, got {len(value)}")
    return value


def json_object(field: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a JSON object (dict), got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInput(field, f"is not JSON-serialisable: {error}") from None
    return value


def whole_number(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(field, f"{value!r} is not a whole number")
    if value < minimum:
        raise InvalidInput(field, f"must be >= {minimum}, got {value}")


def positive_duration(field: str, value: object) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidInput(field, f"must be a positive timedelta, got {value!r}")
    return value
