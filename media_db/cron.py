"""Cron schedules: the 5-field expressions of crontab(5), computed in UTC.

    minute hour day month weekday        e.g. "*/15 * * * *", "0 3 * * 1-5", "30 2 1 jan,jul *"

Each field is `*`, a number, a range `a-b`, any of them with a step (`*/15`, `1-30/2`, `5/10`
for 5-max/10), or a comma list of those. Months also take jan..dec, weekdays sun..sat (0 or 7:
Sunday). As in cron, when both day and weekday are restricted (neither starts with `*`), a day
matching either fires. A schedule's periods start at its fire times: the period holding an
instant starts at the latest fire time at or before it (`Schedule.latest`).
"""

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from media_db.errors import InvalidInput

MINUTE = timedelta(minutes=1)
EXAMPLE = "e.g. '0 3 * * *': every day at 03:00 UTC"
# Fixed English names, as crontab(5) reads them (calendar's names follow the locale).
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
WEEKDAYS = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day", 1, 31, {}),
    _Field("month", 1, 12, MONTHS),
    _Field("weekday", 0, 7, WEEKDAYS),
)
# The longest month each month can be (February: 29, in a leap year).
LONGEST = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}


class ScheduleError(InvalidInput):
    """A cron expression that cannot be read, or that never fires."""

    def __init__(self, expression: str, problem: str) -> None:
        super().__init__("schedule", f"{expression!r}: {problem}")


@dataclass(frozen=True)
class Schedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 (Sunday) to 6
    any_day: bool  # the day field starts with `*`
    any_weekday: bool  # the weekday field starts with `*`

    @classmethod
    def parse(cls, expression: object) -> "Schedule":
        """The schedule, or ScheduleError in one line saying what is wrong."""
        if not isinstance(expression, str):
            raise InvalidInput("schedule", f"must be a cron expression (a str), got {expression!r}")
        parts = expression.split()
        if len(parts) != len(FIELDS):
            raise ScheduleError(
                expression,
                f"{len(parts)} fields; a schedule has 5: minute hour day month weekday ({EXAMPLE})",
            )
        minutes, hours, days, months, weekdays = (
            _values(expression, field, part) for field, part in zip(FIELDS, parts, strict=True)
        )
        schedule = cls(
            expression,
            minutes,
            hours,
            days,
            months,
            frozenset(day % 7 for day in weekdays),  # 7 is Sunday too
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )
        if schedule.any_weekday and not any(
            day <= LONGEST[month] for month in months for day in days
        ):
            raise ScheduleError(expression, "never fires: no month in it has any of its days")
        return schedule

    def latest(self, at: datetime) -> datetime:
        """The latest fire time at or before `at`: the start of the period holding it."""
        moment = _utc(at).replace(second=0, microsecond=0)
        while True:
            if moment.month not in self.months:
                moment = moment.replace(day=1, hour=0, minute=0) - MINUTE
            elif not self._fires_on(moment):
                moment = moment.replace(hour=0, minute=0) - MINUTE
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) - MINUTE
            elif moment.minute not in self.minutes:
                moment -= MINUTE
            else:
                return moment

    def following(self, at: datetime) -> datetime:
        """The first fire time after `at`: the start of the next period."""
        moment = _utc(at).replace(second=0, microsecond=0) + MINUTE
        while True:
            if moment.month not in self.months:
                last = calendar.monthrange(moment.year, moment.month)[1]
                moment = moment.replace(day=last, hour=0, minute=0) + timedelta(days=1)
            elif not self._fires_on(moment):
                moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            elif moment.hour not in self.hours:
                moment = moment.replace(minute=0) + timedelta(hours=1)
            elif moment.minute not in self.minutes:
                moment += MINUTE
            else:
                return moment

    def _fires_on(self, moment: datetime) -> bool:
        on_day = moment.day in self.days
        on_weekday = moment.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:  # cron: AND (a `*` field matches every day)
            return on_day and on_weekday
        return on_day or on_weekday


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise InvalidInput("at", f"must be an aware datetime (UTC), got {at!r}")
    return at.astimezone(UTC)


def _values(expression: str, field: _Field, part: str) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        span, _, step_text = item.partition("/")
        step = _step(expression, field, item, step_text) if "/" in item else 1
        if span == "*":
            low, high = field.low, field.high
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = _number(expression, field, first), _number(expression, field, last)
            if low > high:
                wrapped = f"{first}-{field.high},{field.low}-{last}"
                problem = f"{field.name} range {span} runs backwards: write it as {wrapped}"
                raise ScheduleError(expression, problem)
        else:
            low = _number(expression, field, span)
            high = field.high if "/" in item else low  # `5/10`: from 5 to the end, every 10
        values.update(range(low, high + 1, step))
    return frozenset(values)


def _step(expression: str, field: _Field, item: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        problem = f"{field.name} {item!r}: the step must be a whole number from 1"
        raise ScheduleError(expression, problem)
    return int(text)


def _number(expression: str, field: _Field, text: str) -> int:
    value = field.names.get(text.lower()) if field.names else None
    if value is None and text.isascii() and text.isdigit():
        value = int(text)
    if value is None:
        names = f" or a name ({', '.join(field.names)})" if field.names else ""
        raise ScheduleError(
            expression,
            f"{field.name} {text!r} is not a number from {field.low} to {field.high}{names}",
        )
    if not field.low <= value <= field.high:
        raise ScheduleError(
            expression, f"{field.name} {value} is out of range {field.low}-{field.high}"
        )
    return value
