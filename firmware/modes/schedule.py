"""Which office mode is in force at a given moment: a pure function of config and time.

Each local day is cut into segments (start, end, mode, reason) covering 00:00-24:00:
a closure or public holiday fills the whole day, otherwise the weekly ranges with
`outside_mode` (or `default`, with no schedule at all) between them. Priority: manual
override, then custom closures (`closed`), then public holidays (unless in
`open_dates`), then the weekly schedule.

Decisions are taken on the local wall clock of site.timezone. `until` is the first
instant after `when` at which the mode *name* changes, found by walking the segments
forward; a boundary whose wall time does not exist (spring forward) happens at the
transition itself, and one in the repeated hour (fall back) at its next occurrence, so
`until` is always later than `when` and a service sleeping until it never spins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from firmware.config.modes_schema import WEEKDAYS, ModesConfig
from firmware.modes.public_holidays import HolidayCalendar

if TYPE_CHECKING:
    from firmware.config.schema import Config
    from firmware.modes.override import Override

MAX_SCAN_DAYS = 400
"""How far ahead `until` is looked for: more than a year, so the next holiday is found."""

_DAY_CACHE_SIZE = 1024
_WEEKDAY_INDEX = {name: index for index, name in enumerate(WEEKDAYS)}

REASON_SCHEDULE = "schedule"
REASON_OVERRIDE = "override"


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of one local day with one mode; `start`/`end` are naive local times."""

    start: datetime
    end: datetime
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """The mode in force, why, and when it next changes (UTC; None: not within a year)."""

    name: str
    reason: str
    until: datetime | None


class ModeSchedule:
    """The automatic mode (no override) of one `[modes]` config in one time zone.

    Built off the event loop (tzdata and the holidays package read files); afterwards
    every method is computation on cached days.
    """

    def __init__(self, modes: ModesConfig, timezone: str) -> None:
        self.modes = modes
        self.zone = ZoneInfo(timezone)
        self.holidays = HolidayCalendar(modes.country, modes.subdivision, modes.holiday_categories)
        self._open_dates = frozenset(modes.open_dates)
        self._filler = modes.outside_mode if modes.schedule else modes.default
        self._weekly: list[list[tuple[int, int, str]]] = [[] for _ in range(7)]
        for schedule_range in modes.schedule:
            for day_name in schedule_range.days:
                self._weekly[_WEEKDAY_INDEX[day_name]].append(
                    (schedule_range.start_minute, schedule_range.end_minute, schedule_range.mode)
                )
        for ranges in self._weekly:
            ranges.sort()
        self._days: dict[date, tuple[Segment, ...]] = {}

    @classmethod
    def from_config(cls, config: Config) -> ModeSchedule:
        return cls(config.modes, config.site.timezone)

    def warm(self, when: datetime) -> None:
        """Read the holiday tables for this year and the next (blocking: not on the loop)."""
        year = self.local(when).year
        self.holidays.warm(year - 1, year, year + 1)

    # ----- days ----------------------------------------------------------------------------

    def special_day(self, day: date) -> tuple[str, str] | None:
        """(mode, reason) when a closure or public holiday takes the whole day."""
        for closure in self.modes.closed:
            if closure.covers(day):
                return closure.mode or self.modes.holiday_mode, f"closed:{closure.name}"
        if day not in self._open_dates:
            holiday = self.holidays.name_on(day)
            if holiday is not None:
                return self.modes.holiday_mode, f"holiday:{holiday}"
        return None

    def day_segments(self, day: date) -> tuple[Segment, ...]:
        cached = self._days.get(day)
        if cached is None:
            if len(self._days) >= _DAY_CACHE_SIZE:
                self._days.clear()
            cached = self._days[day] = self._build_day(day)
        return cached

    def _build_day(self, day: date) -> tuple[Segment, ...]:
        midnight = datetime.combine(day, time())
        special = self.special_day(day)
        if special is not None:
            return (Segment(midnight, midnight + timedelta(days=1), *special),)
        segments: list[Segment] = []
        position = 0
        for start, end, mode in self._weekly[day.weekday()]:
            if start > position:
                segments.append(self._segment(midnight, position, start, self._filler))
            segments.append(self._segment(midnight, start, end, mode))
            position = end
        if position < 24 * 60:
            segments.append(self._segment(midnight, position, 24 * 60, self._filler))
        return tuple(segments)

    @staticmethod
    def _segment(midnight: datetime, start: int, end: int, mode: str) -> Segment:
        return Segment(
            midnight + timedelta(minutes=start),
            midnight + timedelta(minutes=end),
            mode,
            REASON_SCHEDULE,
        )

    # ----- decisions -----------------------------------------------------------------------

    def local(self, when: datetime) -> datetime:
        """The naive wall-clock time of an aware instant in the site's zone."""
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"a mode is asked for an aware time, got naive {when.isoformat()}")
        return when.astimezone(self.zone).replace(tzinfo=None, fold=0)

    def _position(self, local: datetime) -> tuple[tuple[Segment, ...], int]:
        segments = self.day_segments(local.date())
        for index, segment in enumerate(segments):
            if segment.start <= local < segment.end:
                return segments, index
        raise AssertionError(f"the segments of {local.date()} do not cover {local.time()}")

    def mode_name_at(self, when: datetime) -> tuple[str, str]:
        """(mode, reason) without looking ahead: the fast path for every inbound call."""
        segments, index = self._position(self.local(when))
        return segments[index].name, segments[index].reason

    def decide(self, when: datetime) -> ModeDecision:
        """The automatic mode at `when`, and the first later instant it changes."""
        local = self.local(when)
        segments, index = self._position(local)
        current = segments[index]
        day = local.date()
        for _ in range(MAX_SCAN_DAYS):
            for segment in segments[index + 1 :]:
                if segment.name == current.name:
                    continue
                instant = self.first_instant_at_or_after(segment.start, when)
                if instant is not None:
                    return ModeDecision(current.name, current.reason, instant)
            day += timedelta(days=1)
            segments, index = self.day_segments(day), -1
        return ModeDecision(current.name, current.reason, None)

    def first_instant_at_or_after(self, local: datetime, after: datetime) -> datetime | None:
        """The first instant later than `after` whose wall time is `local` or past it.

        Normal times: the one instant. Repeated times (fall back): the earliest occurrence
        later than `after`. Skipped times (spring forward): the transition instant.
        None when the wall time exists but has already passed.
        """
        instants = [local.replace(tzinfo=self.zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
        real = [instant for instant in instants if self.local(instant) == local]
        if real:
            later = [instant for instant in real if instant > after]
            return min(later) if later else None
        low, high = sorted(int(instant.timestamp()) for instant in instants)
        while high - low > 1:  # wall time rises through the gap: find where it jumps
            middle = (low + high) // 2
            if self.local(datetime.fromtimestamp(middle, UTC)) >= local:
                high = middle
            else:
                low = middle
        transition = datetime.fromtimestamp(high, UTC)
        return transition if transition > after else None

    def special_days(self, first: date, last: date) -> list[tuple[date, str, str]]:
        """(day, mode, reason) of every closure or holiday from `first` to `last`."""
        found: list[tuple[date, str, str]] = []
        day = first
        while day <= last:
            special = self.special_day(day)
            if special is not None:
                found.append((day, *special))
            day += timedelta(days=1)
        return found


def decide(schedule: ModeSchedule, when: datetime, override: Override | None) -> ModeDecision:
    """The mode in force: an active override whose mode still exists, else the schedule."""
    if override is not None and _in_force(override, when, schedule.modes.all_names):
        return ModeDecision(override.mode, REASON_OVERRIDE, override.expires_at)
    return schedule.decide(when)


def _in_force(override: Override, when: datetime, names: tuple[str, ...]) -> bool:
    return override.active_at(when) and override.mode in names


def mode_at(config: Config, when: datetime, override: Override | None = None) -> ModeDecision:
    """One-off decision for a whole config (tests, the CLI); the core keeps a ModeSchedule."""
    return decide(ModeSchedule.from_config(config), when, override)


def local_text(instant: datetime, zone: ZoneInfo, now: datetime) -> str:
    """'Mon 08:30' within the coming week, else '2026-08-16 00:00' (local time)."""
    local = instant.astimezone(zone)
    if timedelta(0) <= instant - now < timedelta(days=6):
        return local.strftime("%a %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")
