"""When scheduled jobs are due and which period they cover: hand-computed calendar cases.

Lisbon is UTC+0 in winter and UTC+1 in summer; in 2026 summer time starts on
29 March at 01:00 UTC and ends on 25 October at 01:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from firmware.accounting.schedule_times import (
    Timing,
    latest_due,
    local_midnight_utc,
    next_due,
    report_period,
    retention_cutoff,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


MONTHLY_LISBON = Timing.parse("monthly", "06:00", 1, "monday", "Europe/Lisbon")


@pytest.mark.parametrize(
    ("now", "latest", "following"),
    [
        # winter: 06:00 local is 06:00 UTC
        ("2026-11-15T12:00:00", "2026-11-01T06:00:00", "2026-12-01T06:00:00"),
        # summer: 06:00 local is 05:00 UTC; one minute before the run
        ("2026-07-01T04:59:00", "2026-06-01T05:00:00", "2026-07-01T05:00:00"),
        # exactly at the run: it is the latest, the next is a month on
        ("2026-07-01T05:00:00", "2026-07-01T05:00:00", "2026-08-01T05:00:00"),
        # across the new year
        ("2026-12-31T23:59:00", "2026-12-01T06:00:00", "2027-01-01T06:00:00"),
    ],
)
def test_monthly_report_runs_at_local_time_whatever_the_season(
    now: str, latest: str, following: str
) -> None:
    assert latest_due(MONTHLY_LISBON, utc(now)) == utc(latest)
    assert next_due(MONTHLY_LISBON, utc(now)) == utc(following)


def test_monthly_report_on_the_15th() -> None:
    timing = Timing.parse("monthly", "23:15", 15, "monday", "UTC")
    assert latest_due(timing, utc("2026-02-15T23:14:59")) == utc("2026-01-15T23:15:00")
    assert next_due(timing, utc("2026-02-15T23:14:59")) == utc("2026-02-15T23:15:00")


def test_weekly_report_on_monday_morning() -> None:
    timing = Timing.parse("weekly", "07:30", 1, "monday", "UTC")
    sunday = utc("2026-11-22T10:00:00")
    assert latest_due(timing, sunday) == utc("2026-11-16T07:30:00")
    assert next_due(timing, sunday) == utc("2026-11-23T07:30:00")


def test_a_time_repeated_by_the_autumn_change_runs_once() -> None:
    # 01:30 local on 25 October 2026 happens at 00:30 UTC (summer) and again at 01:30 UTC.
    timing = Timing.parse("weekly", "01:30", 1, "sunday", "Europe/Lisbon")
    assert latest_due(timing, utc("2026-10-25T00:29:00")) == utc("2026-10-18T00:30:00")
    assert latest_due(timing, utc("2026-10-25T00:30:00")) == utc("2026-10-25T00:30:00")
    # in the repeated hour, before and after the second 01:30: still the first one
    assert latest_due(timing, utc("2026-10-25T01:10:00")) == utc("2026-10-25T00:30:00")
    assert latest_due(timing, utc("2026-10-25T01:45:00")) == utc("2026-10-25T00:30:00")
    # and the next run is a week later (winter: 01:30 local is 01:30 UTC), never at 01:30 UTC
    assert next_due(timing, utc("2026-10-25T00:30:00")) == utc("2026-11-01T01:30:00")
    assert next_due(timing, utc("2026-10-25T01:10:00")) == utc("2026-11-01T01:30:00")


def test_a_time_skipped_by_the_spring_change_still_runs() -> None:
    # 29 March 2026: the clock goes from 01:00 to 02:00; 01:30 local does not exist.
    timing = Timing.parse("weekly", "01:30", 1, "sunday", "Europe/Lisbon")
    assert next_due(timing, utc("2026-03-29T00:00:00")) == utc("2026-03-29T01:30:00")
    assert latest_due(timing, utc("2026-03-29T02:00:00")) == utc("2026-03-29T01:30:00")


@pytest.mark.parametrize(
    ("due", "zone", "first", "last", "label"),
    [
        ("2026-11-01T06:00:00", "Europe/Lisbon", "2026-10-01", "2026-10-31", "2026-10"),
        ("2026-03-01T06:00:00", "Europe/Lisbon", "2026-02-01", "2026-02-28", "2026-02"),
        ("2028-03-01T06:00:00", "UTC", "2028-02-01", "2028-02-29", "2028-02"),
        ("2027-01-01T06:00:00", "UTC", "2026-12-01", "2026-12-31", "2026-12"),
        # 23:30 UTC on 30 November is already 1 December in Tokyo: November is over there
        ("2026-11-30T23:30:00", "Asia/Tokyo", "2026-11-01", "2026-11-30", "2026-11"),
        # ... but not yet in Lisbon, where October is the last full month
        ("2026-11-30T23:30:00", "Europe/Lisbon", "2026-10-01", "2026-10-31", "2026-10"),
    ],
)
def test_monthly_period_is_the_previous_full_local_month(
    due: str, zone: str, first: str, last: str, label: str
) -> None:
    period = report_period("monthly", utc(due), zone)
    assert (period.first, period.last, period.label) == (
        date.fromisoformat(first),
        date.fromisoformat(last),
        label,
    )


@pytest.mark.parametrize(
    ("due", "first", "last", "label"),
    [
        ("2026-11-23T07:30:00", "2026-11-16", "2026-11-22", "2026-W47"),  # Monday
        ("2026-11-25T07:30:00", "2026-11-16", "2026-11-22", "2026-W47"),  # Wednesday
        ("2026-11-29T07:30:00", "2026-11-16", "2026-11-22", "2026-W47"),  # Sunday
        ("2026-01-05T07:30:00", "2025-12-29", "2026-01-04", "2026-W01"),  # ISO year differs
    ],
)
def test_weekly_period_is_the_previous_monday_to_sunday(
    due: str, first: str, last: str, label: str
) -> None:
    period = report_period("weekly", utc(due), "UTC")
    assert (period.first.isoformat(), period.last.isoformat(), period.label) == (
        first,
        last,
        label,
    )


def test_retention_keeps_whole_months() -> None:
    assert retention_cutoff(utc("2026-11-01T03:30:00"), 24, "Europe/Lisbon") == date(2024, 11, 1)
    assert retention_cutoff(utc("2026-03-15T03:30:00"), 1, "UTC") == date(2026, 2, 1)
    assert retention_cutoff(utc("2026-01-20T03:30:00"), 13, "UTC") == date(2024, 12, 1)


def test_a_local_date_starts_at_local_midnight() -> None:
    assert local_midnight_utc(date(2026, 7, 1), "Europe/Lisbon") == utc("2026-06-30T23:00:00")
    assert local_midnight_utc(date(2026, 12, 1), "Europe/Lisbon") == utc("2026-12-01T00:00:00")
