"""When scheduled jobs are due and which period each run covers (pure; no I/O, no clock).

Recurrences are dateutil rules evaluated in the site's local wall time, so "the 1st at
06:00" stays 06:00 across daylight-saving changes. A wall time that happens twice (the
autumn change) counts once, at its first occurrence; one that does not exist (the spring
change) runs at the same instant an hour-earlier clock would show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from dateutil.rrule import MONTHLY, WEEKLY, rrule

from firmware.config.schedule_schema import WEEKDAYS

Frequency = Literal["monthly", "weekly"]


@dataclass(frozen=True)
class Timing:
    """When a job runs: every month on `day`, or every week on `weekday`, at `at` local time."""

    frequency: Frequency
    at: time
    day: int = 1
    weekday: str = "monday"
    timezone: str = "UTC"

    @classmethod
    def parse(
        cls, frequency: Frequency, clock_time: str, day: int, weekday: str, timezone: str
    ) -> Timing:
        hours, minutes = clock_time.split(":")
        return cls(frequency, time(int(hours), int(minutes)), day, weekday, timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Period:
    """The local dates a run reports on, first and last included."""

    first: date
    last: date
    label: str  # 2026-10 for a month, 2026-W43 for an ISO week


def _rule(timing: Timing, around: datetime) -> rrule:
    """The recurrence, starting far enough before `around` (naive local) to reach back."""
    start = datetime.combine(around.date() - timedelta(days=70), time(0))
    if timing.frequency == "monthly":
        return rrule(
            MONTHLY,
            dtstart=start,
            bymonthday=timing.day,
            byhour=timing.at.hour,
            byminute=timing.at.minute,
            bysecond=0,
        )
    return rrule(
        WEEKLY,
        dtstart=start,
        byweekday=WEEKDAYS.index(timing.weekday),
        byhour=timing.at.hour,
        byminute=timing.at.minute,
        bysecond=0,
    )


def _local_naive(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone).astimezone(UTC)


def latest_due(timing: Timing, now: datetime) -> datetime:
    """The most recent occurrence at or before `now` (aware), in UTC."""
    zone = timing.zone
    local_now = _local_naive(now, zone)
    rule = _rule(timing, local_now)
    occurrence = rule.before(local_now, inc=True)
    while occurrence is not None and _to_utc(occurrence, zone) > now:
        occurrence = rule.before(occurrence)
    following = rule.after(local_now)
    if following is not None and _to_utc(following, zone) <= now:
        occurrence = following  # in the repeated autumn hour, already past its first pass
    if occurrence is None:  # cannot happen: the rule starts 70 days back
        raise ValueError(f"no occurrence of {timing} before {now}")
    return _to_utc(occurrence, zone)


def next_due(timing: Timing, after: datetime) -> datetime:
    """The first occurrence strictly after `after` (aware), in UTC."""
    zone = timing.zone
    local = _local_naive(after, zone)
    rule = _rule(timing, local)
    while True:
        occurrence = rule.after(local)
        if _to_utc(occurrence, zone) > after:
            return _to_utc(occurrence, zone)
        local = occurrence


def report_period(frequency: Frequency, due: datetime, timezone: str) -> Period:
    """The previous full month or Monday-Sunday week, seen from the run's local date."""
    today = due.astimezone(ZoneInfo(timezone)).date()
    if frequency == "monthly":
        this_month = today.replace(day=1)
        first = this_month - relativedelta(months=1)
        return Period(first, this_month - timedelta(days=1), f"{first:%Y-%m}")
    first = today - timedelta(days=today.weekday() + 7)
    year, week, _ = first.isocalendar()
    return Period(first, first + timedelta(days=6), f"{year}-W{week:02d}")


def retention_cutoff(due: datetime, months: int, timezone: str) -> date:
    """The local date before which CDRs go: the start of the month `months` full months back."""
    today = due.astimezone(ZoneInfo(timezone)).date()
    return today.replace(day=1) - relativedelta(months=months)


def local_midnight_utc(day: date, timezone: str) -> datetime:
    """Local midnight starting `day`, in UTC (what a date bound in the CLI means)."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)
