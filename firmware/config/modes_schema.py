"""Office modes: weekly schedule, holidays, custom dates, overrides; see docs/modes.md.

Everything that can be checked inside `[modes]` is checked here (times, overlapping
ranges, unknown mode names, the holiday country); references to other sections (the
extensions allowed to override, the `mode_*` feature codes) are checked by
`firmware.modes.checks.cross_check_modes`.
"""

from __future__ import annotations

import itertools
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from firmware.config.fields import ExtensionNumber, Name, Section

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BUILT_IN_MODES = ("day", "lunch", "night", "holiday")
# Where a mode without a destination of its own takes it from (before `default`).
BUILT_IN_FALLBACKS = {"lunch": "night", "holiday": "night"}
LONGEST_CLOSURE_DAYS = 366
CalendarDate = date  # `date` is also a key of [[modes.closed]], which would shadow the type


def _weekdays(value: Any) -> tuple[str, ...]:
    """Day names or ranges ('mon-fri', 'sat,sun', ['mon', 'wed-fri']) in week order."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("days must be a list like ['mon', 'tue'] or text like 'mon-fri'")
    chosen: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        first, dash, last = text.partition("-")
        if first not in WEEKDAYS or (dash and last not in WEEKDAYS):
            raise ValueError(
                f"day {item!r} is not a weekday or range of them; use {', '.join(WEEKDAYS)} "
                f"or a range like 'mon-fri'"
            )
        start = WEEKDAYS.index(first)
        end = WEEKDAYS.index(last) if dash else start
        if end < start:
            raise ValueError(f"day range {item!r} runs backwards; write it as 'mon-fri'")
        chosen.update(range(start, end + 1))
    if not chosen:
        raise ValueError("days is empty: name at least one weekday")
    return tuple(WEEKDAYS[index] for index in sorted(chosen))


def _clock_time(value: str) -> str:
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00", value):
        raise ValueError(f"time {value!r} must be HH:MM in 24-hour form, e.g. '08:30' or '24:00'")
    return value


def _country(value: str) -> str:
    return value.strip().upper()


Weekdays = Annotated[tuple[str, ...], BeforeValidator(_weekdays)]
ClockTime = Annotated[str, AfterValidator(_clock_time)]
Country = Annotated[str, AfterValidator(_country)]


def minute_of_day(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


class ScheduleRangeConfig(Section):
    """One weekly range: on `days`, from `from` (inclusive) to `to` (exclusive), `mode`.

    Times are local (site.timezone). A range ends by midnight ("24:00" at the latest):
    a night range is simply what no range covers (`outside_mode`).
    """

    days: Weekdays
    start: ClockTime = Field(alias="from")
    end: ClockTime = Field(alias="to")
    mode: Name

    @model_validator(mode="after")
    def _forwards(self) -> ScheduleRangeConfig:
        if self.start == "24:00":
            raise ValueError("from '24:00' is the end of the day: a range starts by 23:59")
        if self.start_minute >= self.end_minute:
            raise ValueError(
                f"from {self.start} is not before to {self.end}: a range may not cross midnight "
                f"(split it into {self.start}-24:00 and 00:00-{self.end} on the next day), and "
                f"night hours need no range: they are outside_mode"
            )
        return self

    @property
    def start_minute(self) -> int:
        return minute_of_day(self.start)

    @property
    def end_minute(self) -> int:
        return minute_of_day(self.end)

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start}-{self.end} {self.mode}"


class ClosedConfig(Section):
    """A custom closure: one `date`, or `from`..`to` inclusive (a vacation).

    With `every_year` the year is ignored (e.g. 24 December), and a range may wrap the
    new year (24 December to 2 January). `mode` defaults to `holiday_mode`.
    """

    date: CalendarDate | None = None
    start: CalendarDate | None = Field(default=None, alias="from")
    end: CalendarDate | None = Field(default=None, alias="to")
    name: Annotated[str, Field(min_length=1, max_length=64)] = "closed"
    mode: Name | None = None
    every_year: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> ClosedConfig:
        if not self.name.isprintable():
            raise ValueError("name must be printable text")
        if self.date is not None:
            if self.start is not None or self.end is not None:
                raise ValueError("give either date, or from and to, not both")
            return self
        if self.start is None or self.end is None:
            raise ValueError("give date = YYYY-MM-DD, or both from and to (inclusive)")
        if self.every_year:
            return self
        if self.end < self.start:
            raise ValueError(f"to {self.end} is before from {self.start}")
        length = (self.end - self.start).days + 1
        if length > LONGEST_CLOSURE_DAYS:
            raise ValueError(
                f"from {self.start} to {self.end} is {length} days: a typo in the year? "
                f"(at most {LONGEST_CLOSURE_DAYS})"
            )
        return self

    @property
    def first(self) -> CalendarDate:
        first = self.date if self.date is not None else self.start
        assert first is not None
        return first

    @property
    def last(self) -> CalendarDate:
        last = self.date if self.date is not None else self.end
        assert last is not None
        return last

    def covers(self, day: CalendarDate) -> bool:
        if not self.every_year:
            return self.first <= day <= self.last
        key = (day.month, day.day)
        first = (self.first.month, self.first.day)
        last = (self.last.month, self.last.day)
        if first <= last:
            return first <= key <= last
        return key >= first or key <= last  # wraps the new year


class ModesConfig(Section):
    """Which mode the office is in, by week schedule, public holidays and closures.

    Built-in modes are day, lunch, night and holiday; `names` adds others. Without any
    `[[modes.schedule]]` range the office is in `default` mode except on holidays and
    closures; with ranges, times no range covers are `outside_mode`.
    """

    names: tuple[Name, ...] = ()
    default: Name = "day"
    outside_mode: Name = "night"
    schedule: tuple[ScheduleRangeConfig, ...] = ()
    country: Country = ""
    subdivision: str = ""
    holiday_categories: tuple[Name, ...] = ("public",)
    holiday_mode: Name = "holiday"
    open_dates: tuple[date, ...] = ()
    closed: tuple[ClosedConfig, ...] = ()
    fallbacks: dict[Name, Name] = Field(default_factory=dict)
    override_extensions: tuple[ExtensionNumber, ...] = ()
    phone_override: Literal["next_change", "until_cancelled"] = "next_change"

    @property
    def all_names(self) -> tuple[str, ...]:
        """Built-in modes first, then the installer's, each once."""
        return tuple(dict.fromkeys((*BUILT_IN_MODES, *self.names)))

    def fallback_of(self, mode: str) -> str | None:
        """The next mode to look at when `mode` has no destination; None after `default`."""
        if mode == self.default:
            return None
        return self.fallbacks.get(mode) or BUILT_IN_FALLBACKS.get(mode) or self.default

    @model_validator(mode="after")
    def _consistent(self) -> ModesConfig:
        problems = [
            *self._unknown_modes(),
            *self._overlaps(),
            *self._fallback_loops(),
            *self._holiday_problems(),
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _unknown_modes(self) -> list[str]:
        known = self.all_names
        hint = f"modes are {', '.join(known)} (add others to modes.names)"
        references = [("default", self.default), ("outside_mode", self.outside_mode),
                      ("holiday_mode", self.holiday_mode)]  # fmt: skip
        references += [(f"schedule[{i}].mode", r.mode) for i, r in enumerate(self.schedule)]
        references += [(f"closed[{i}].mode", c.mode) for i, c in enumerate(self.closed) if c.mode]
        for source, target in self.fallbacks.items():
            references += [(f"fallbacks.{source}", source), (f"fallbacks.{source}", target)]
        return [f"{where}: {mode!r} is not a mode; {hint}" for where, mode in references
                if mode not in known]  # fmt: skip

    def _overlaps(self) -> list[str]:
        problems: list[str] = []
        for day in WEEKDAYS:
            ranges = sorted(
                (r.start_minute, r.end_minute, index)
                for index, r in enumerate(self.schedule)
                if day in r.days
            )
            for (_, first_end, first), (second_start, _, second) in itertools.pairwise(ranges):
                if second_start < first_end:
                    later, earlier = max(first, second), min(first, second)
                    text = (
                        f"schedule[{later}] ({self.schedule[later].describe()}) overlaps "
                        f"schedule[{earlier}] ({self.schedule[earlier].describe()})"
                    )
                    if not any(p.startswith(text) for p in problems):
                        problems.append(f"{text} on {day}: a moment must have one mode")
        return problems

    def _fallback_loops(self) -> list[str]:
        problems: list[str] = []
        if self.default in self.fallbacks:
            problems.append(
                f"fallbacks.{self.default}: the default mode ends every chain, it has no fallback"
            )
        for mode in self.all_names:
            seen = [mode]
            following = self.fallback_of(mode)
            while following is not None and following in self.all_names:
                if following in seen:
                    chain = " -> ".join([*seen, following])
                    problems.append(f"fallbacks: {chain} is a loop; the chain must end at default")
                    break
                seen.append(following)
                following = self.fallback_of(following)
        return list(dict.fromkeys(problems))

    def _holiday_problems(self) -> list[str]:
        if not self.country:
            if self.subdivision:
                return ["subdivision: set country too (e.g. country = 'PT')"]
            return []
        from firmware.modes.public_holidays import check_country

        return check_country(self.country, self.subdivision, self.holiday_categories)
