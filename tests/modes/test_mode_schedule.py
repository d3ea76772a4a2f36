"""Which mode is in force at a given instant: hand-computed cases in Europe/Lisbon.

Times in the tests are UTC; June is summer time (local = UTC+1), so 08:30 local is
07:30 UTC; January is winter time (local = UTC).
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from mode_office import office, utc

from firmware.modes.override import Override
from firmware.modes.schedule import ModeDecision, ModeSchedule, mode_at

PT = office()


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        # Friday 5 June 2026: one second before and exactly at 08:30 local
        ("2026-06-05T07:29:59", ModeDecision("night", "schedule", utc("2026-06-05T07:30:00"))),
        ("2026-06-05T07:30:00", ModeDecision("day", "schedule", utc("2026-06-05T11:30:00"))),
        # lunch 12:30-14:00 local, then day again until 18:00
        ("2026-06-05T11:29:59", ModeDecision("day", "schedule", utc("2026-06-05T11:30:00"))),
        ("2026-06-05T11:30:00", ModeDecision("lunch", "schedule", utc("2026-06-05T13:00:00"))),
        ("2026-06-05T13:00:00", ModeDecision("day", "schedule", utc("2026-06-05T17:00:00"))),
        # Friday 18:00 local: night until Saturday 09:00 local
        ("2026-06-05T17:00:00", ModeDecision("night", "schedule", utc("2026-06-06T08:00:00"))),
        # Saturday 13:00 local: night all Sunday, until Monday 08:30 local
        ("2026-06-06T12:00:00", ModeDecision("night", "schedule", utc("2026-06-08T07:30:00"))),
        ("2026-06-07T10:00:00", ModeDecision("night", "schedule", utc("2026-06-08T07:30:00"))),
        # winter: 08:30 local is 08:30 UTC
        ("2026-01-09T08:29:59", ModeDecision("night", "schedule", utc("2026-01-09T08:30:00"))),
    ],
)
def test_weekly_schedule_boundaries(when: str, expected: ModeDecision) -> None:
    assert mode_at(PT, utc(when)) == expected


def test_a_portuguese_public_holiday_is_holiday_mode_all_day() -> None:
    # Tuesday 9 June 18:00 local: the night runs into Portugal Day (Wednesday 10 June),
    # which is not night but holiday: the change is at midnight local (23:00 UTC).
    assert mode_at(PT, utc("2026-06-09T17:00:00")) == ModeDecision(
        "night", "schedule", utc("2026-06-09T23:00:00")
    )
    holiday = mode_at(PT, utc("2026-06-10T09:00:00"))
    assert holiday.name == "holiday"
    assert holiday.reason == "holiday:Day of Portugal, Camões, and the Portuguese Communities"
    # Thursday 11 June is an ordinary day: the holiday ends at midnight, night until 08:30
    assert holiday.until == utc("2026-06-10T23:00:00")
    assert mode_at(PT, utc("2026-06-10T23:00:00")) == ModeDecision(
        "night", "schedule", utc("2026-06-11T07:30:00")
    )


def test_a_regional_holiday_only_with_its_subdivision() -> None:
    # Saint Anthony (13 June) is a holiday in Lisbon, not in Porto; a Saturday with hours
    lisbon = office('country = "PT"\nsubdivision = "11"')
    lisbon_by_name = office('country = "PT"\nsubdivision = "Lisboa"')
    porto = office('country = "PT"\nsubdivision = "13"')
    saturday_morning = utc("2026-06-13T09:00:00")
    assert mode_at(lisbon, saturday_morning).reason == "holiday:Saint Anthony's Day"
    assert mode_at(lisbon_by_name, saturday_morning).name == "holiday"
    assert mode_at(porto, saturday_morning) == ModeDecision(
        "day", "schedule", utc("2026-06-13T12:00:00")
    )
    assert mode_at(PT, saturday_morning).name == "day"


def test_holidays_need_a_country() -> None:
    nowhere = office("")
    assert mode_at(nowhere, utc("2026-06-10T09:00:00")).name == "day"


def test_holiday_mode_can_be_night_and_open_dates_ignore_a_holiday() -> None:
    config = office('country = "PT"\nholiday_mode = "night"\nopen_dates = [2026-06-04]')
    assert mode_at(config, utc("2026-06-10T09:00:00")).name == "night"
    # Corpus Christi (Thursday 4 June) is worked in this office
    assert mode_at(config, utc("2026-06-04T09:00:00")) == ModeDecision(
        "day", "schedule", utc("2026-06-04T11:30:00")
    )


VACATION = """
[[modes.closed]]
from = 2026-08-03
to = 2026-08-14
name = "Summer vacation"

[[modes.closed]]
date = 2026-12-24
name = "Christmas Eve"
mode = "night"
"""


@pytest.mark.parametrize(
    ("when", "mode", "reason"),
    [
        ("2026-07-31T10:00:00", "day", "schedule"),  # Friday before
        ("2026-08-02T22:59:59", "night", "schedule"),  # Sunday 23:59:59 local
        ("2026-08-02T23:00:00", "holiday", "closed:Summer vacation"),  # Monday 3rd, 00:00
        ("2026-08-14T22:59:59", "holiday", "closed:Summer vacation"),  # last day, inclusive
        ("2026-08-15T10:00:00", "holiday", "holiday:Assumption Day"),  # then a public holiday
        ("2026-08-17T10:00:00", "day", "schedule"),  # Monday 17th: back to work
        ("2026-12-24T10:00:00", "night", "closed:Christmas Eve"),
    ],
)
def test_custom_closures_with_inclusive_ends(when: str, mode: str, reason: str) -> None:
    config = office(extra=VACATION)
    decision = mode_at(config, utc(when))
    assert (decision.name, decision.reason) == (mode, reason)


def test_the_vacation_lasts_until_the_mode_really_changes() -> None:
    config = office(extra=VACATION)
    # holiday from Monday 3 August through the 15th (Assumption, a Saturday): Sunday 16th
    # is night; the name changes at midnight local on the 16th
    assert mode_at(config, utc("2026-08-05T10:00:00")).until == utc("2026-08-15T23:00:00")


def test_a_closure_wins_over_a_public_holiday() -> None:
    config = office(extra='[[modes.closed]]\ndate = 2026-06-10\nname = "Inventory"\nmode = "day"')
    assert mode_at(config, utc("2026-06-10T03:00:00")) == ModeDecision(
        "day", "closed:Inventory", utc("2026-06-10T23:00:00")
    )


def test_a_yearly_closure_wrapping_the_new_year() -> None:
    config = office(
        "",
        extra="[[modes.closed]]\nfrom = 2000-12-24\nto = 2000-01-02\nevery_year = true\n"
        'name = "Christmas break"',
    )
    schedule = ModeSchedule.from_config(config)
    for day, closed in [
        (date(2026, 12, 23), False),
        (date(2026, 12, 24), True),
        (date(2026, 12, 31), True),
        (date(2027, 1, 1), True),
        (date(2027, 1, 2), True),
        (date(2027, 1, 4), False),
        (date(2030, 12, 28), True),
    ]:
        special = schedule.special_day(day)
        assert (special == ("holiday", "closed:Christmas break")) is closed, day


def test_without_a_schedule_the_office_is_in_default_mode() -> None:
    config = office("", schedule="")
    assert mode_at(config, utc("2026-06-07T03:00:00")) == ModeDecision("day", "schedule", None)
    with_holidays = office('country = "PT"', schedule="")
    assert mode_at(with_holidays, utc("2026-06-09T12:00:00")) == ModeDecision(
        "day", "schedule", utc("2026-06-09T23:00:00")
    )


def test_an_override_wins_until_it_expires() -> None:
    override = Override("night", "ext:201", utc("2026-06-05T09:00:00"), utc("2026-06-05T10:00:00"))
    assert mode_at(PT, utc("2026-06-05T09:59:59"), override) == ModeDecision(
        "night", "override", utc("2026-06-05T10:00:00")
    )
    assert mode_at(PT, utc("2026-06-05T10:00:00"), override) == ModeDecision(
        "day", "schedule", utc("2026-06-05T11:30:00")
    )
    unknown = Override("party", "cli", utc("2026-06-05T09:00:00"))
    assert mode_at(PT, utc("2026-06-05T09:30:00"), unknown).name == "day"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        mode_at(PT, utc("2026-06-05T09:00:00").replace(tzinfo=None))


def test_the_fast_path_agrees_with_the_full_decision() -> None:
    schedule = ModeSchedule.from_config(office(extra=VACATION))
    start = utc("2026-06-01T00:00:00")
    for step in range(0, 24 * 60 * 90, 7):  # every 7 minutes for 90 days
        when = start + timedelta(minutes=step)
        decision = schedule.decide(when)
        assert schedule.mode_name_at(when) == (decision.name, decision.reason)
        assert decision.until is None or decision.until > when
