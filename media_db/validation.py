"""Checks on caller input, run before anything is committed. Each failure names the field.

The limits come from the models (media_db/statements.py reads them: lengths, integer ranges,
simple CHECKs); this module only applies them."""

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from enum import StrEnum
from typing import TypeVar

from psycopg.types.json import Jsonb

from media_db.errors import InvalidInput

E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")
R = TypeVar("R")
# What PostgreSQL text cannot hold: NUL, and surrogates (a str holding one has no UTF-8 form).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Bounds:
    """The numbers a column takes: whole ones (an integer type) or any finite one, from `low` to
    `high`, each included unless `low_open` / `high_open`. None: no bound on that side.
    `decimal`: a NUMERIC, which takes a Decimal too and stores it rounded to `scale` places
    (None: as given), the bounds holding for the rounded value."""

    whole: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    decimal: bool = False
    scale: int | None = None

    def __str__(self) -> str:
        kind = "a whole number" if self.whole else "a finite number"
        if self.whole and self.low is not None and self.high is not None:
            return f"{kind} from {self.low} to {self.high}"
        sides = []
        if self.low is not None:
            sides.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            sides.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{kind} {' and '.join(sides)}".rstrip()

    def narrowed(self, operator: str, limit: float) -> "Bounds":
        """These bounds and `value <operator> limit` (>=, >, <=, <) both."""
        is_open = operator in {">", "<"}
        if operator.startswith(">"):
            if self.low is None or limit > self.low or (limit == self.low and is_open):
                return replace(self, low=limit, low_open=is_open)
        elif self.high is None or limit < self.high or (limit == self.high and is_open):
            return replace(self, high=limit, high_open=is_open)
        return self

    def admits(self, value: float | Decimal) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


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


def number(field: str, value: object, bounds: Bounds) -> int | float | Decimal | None:
    """The value as the column stores it (an int for an integer column), or InvalidInput: a
    float is never rounded into an integer column, and nothing out of range reaches the server.
    A NUMERIC column takes a Decimal too, checked as it stores it (_stored_as_numeric)."""
    if value is None:
        return None
    checked: int | float | Decimal | None = None
    if isinstance(value, bool):
        pass  # an int to Python, never meant as a number here
    elif bounds.whole:
        # A plain int, so that what is checked is what gets used (an int subclass may say
        # otherwise through __int__ or __str__); a float, however whole, is not one.
        checked = int.__index__(value) if isinstance(value, int) else None
    elif bounds.decimal and isinstance(value, int | float | Decimal):
        stored = _stored_as_numeric(value, bounds.scale)  # the bounds hold for it
        checked = value if stored is not None and bounds.admits(stored) else None
    elif isinstance(value, int | float):
        try:
            checked = value if math.isfinite(float(value)) else None
        except OverflowError:  # an int too large for a double
            checked = None
    if checked is None or (not bounds.decimal and not bounds.admits(checked)):
        raise InvalidInput(field, f"must be {bounds}, got {value!r}")
    return checked


# NUMERIC's own limits: up to 131,072 digits before the decimal point, 16,383 after.
NUMERIC_DIGITS, NUMERIC_PLACES = 131_072, 16_383


def _stored_as_numeric(value: int | float | Decimal, scale: int | None) -> Decimal | None:
    """What a NUMERIC stores for `value`: rounded to `scale` places (half away from zero, as
    PostgreSQL does), or None where it stores nothing (NaN, infinity, past its digits)."""
    exact = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite() or exact.adjusted() >= NUMERIC_DIGITS:
        return None
    if scale is None:
        places = -int(exact.as_tuple().exponent)
        return exact if places <= NUMERIC_PLACES else None
    with localcontext() as context:  # room for every digit a NUMERIC holds
        context.prec = NUMERIC_DIGITS + NUMERIC_PLACES
        return exact.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)


def each_checked(items: Iterable[T], check: Callable[[T], R]) -> Iterator[R]:
    """`check(item)` of each item of a batch, lazily; an InvalidInput also says which item."""
    for index, item in enumerate(items):
        try:
            yield check(item)
        except InvalidInput as error:
            where = f"{error.problem} (item {index} of the batch)"
            raise InvalidInput(error.field, where) from None


def whole_number(field: str, value: object, bounds: Bounds) -> int:
    """A value that must be given: a NOT NULL integer column, a count, a page size."""
    checked = None if value is None else number(field, value, bounds)
    if not isinstance(checked, int):
        raise InvalidInput(field, f"must be {bounds}, got {value!r}")
    return checked


def between(low: int, high: int) -> Bounds:
    return Bounds(whole=True, low=low, high=high)


def non_negative(field: str, value: float | None) -> None:
    number(field, value, Bounds(whole=False, low=0))


def positive(field: str, value: float | None) -> None:
    number(field, value, Bounds(whole=False, low=0, low_open=True))


def required_text(field: str, value: object, max_length: int | None = None) -> str:
    text = _non_empty(field, value)
    length = str.__len__(text)  # a str subclass's own __len__ could hide the real length
    if max_length is not None and length > max_length:
        raise InvalidInput(field, f"must be at most {max_length} characters, got {length}")
    _storable(field, text)
    return text


def of_type(field: str, value: object, python_type: type) -> object:
    """`value` if it is a `python_type` (a column's own type, read from the model)."""
    if not isinstance(value, python_type) or (python_type is int and isinstance(value, bool)):
        raise InvalidInput(field, f"must be a {python_type.__name__}, got {type(value).__name__}")
    return value


def error_text(field: str, value: object) -> str:
    """An error message, stored whatever it holds: often an exception's text, which the caller
    does not choose, and refusing it would leave its job or result open. NUL and surrogates
    become U+FFFD."""
    return UNSTORABLE.sub(REPLACEMENT, _non_empty(field, value))


def _non_empty(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or value.isspace():
        raise InvalidInput(field, "must be a non-empty string")
    return value


# NaN and infinities are not JSON, and JSONB refuses them; non-ASCII text is kept as it is, so
# that a lone surrogate shows in the dump. One encoder: json.dumps with options builds one a call.
_JSON = json.JSONEncoder(allow_nan=False, ensure_ascii=False)


def jsonb(field: str, value: object) -> Jsonb:
    """A JSON object, checked, as psycopg sends it to a JSONB column: dumped once, here (the
    check needs the dump; psycopg would have dumped it again)."""
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a JSON object (dict), got {type(value).__name__}")
    try:
        if not _keys_are_strings(value):
            # The encoder would turn 1 into "1": {1: "a", "1": "b"} would keep only one.
            raise InvalidInput(field, "has a key that is not a string (JSON keys are strings)")
        dumped = _JSON.encode(value)
    except (TypeError, ValueError) as error:
        raise InvalidInput(field, f"is not JSON-serialisable: {error}") from None
    except RecursionError:  # the encoder recurses once per level (and so would PostgreSQL)
        raise InvalidInput(
            field, "is nested too deeply to store (keep it to a few hundred levels)"
        ) from None
    # The dump holds a NUL as \u0000 and a surrogate as itself; only then look for which string.
    if "\\u0000" in dumped or UNSTORABLE.search(dumped):
        for text in _strings(value):
            _storable(field, text)
    return Jsonb(dumped, dumps=str)  # the text itself is what psycopg sends


def positive_duration(field: str, value: object) -> timedelta:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidInput(field, f"must be a positive timedelta, got {value!r}")
    return value


def _keys_are_strings(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _keys_are_strings(v) for key, v in value.items())
    if isinstance(value, list | tuple):
        return all(_keys_are_strings(item) for item in value)
    return True


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, keys included (JSONB refuses \\u0000 in either)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _storable(field: str, value: str) -> None:
    if found := UNSTORABLE.search(value):
        what = "a NUL character" if found[0] == "\x00" else f"a lone surrogate ({found[0]!r})"
        raise InvalidInput(
            field, f"holds {what} at position {found.start()}, which PostgreSQL cannot store"
        )
