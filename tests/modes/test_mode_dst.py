"""Summer-time changes in Europe/Lisbon: boundaries keep to the wall clock and never loop.

2026: summer time starts Sunday 29 March at 01:00 UTC (local 01:00 -> 02:00, so local
01:00-01:59 does not exist) and ends Sunday 25 October at 01:00 UTC (local 02:00 -> 01:00,
so local 01:00-01:59 happens twice).
"""

from __future__ import annotations

from datetime import timedelta

from mode_office import office, utc

from firmware.modes.schedule import ModeDecision, ModeSchedule, mode_at

SUNDAY_MORNING = """
[[modes.schedule]]
days = "sun"
from = "08:30"
to = "12:30"
mode = "day"
"""

SUNDAY_SMALL_HOURS = """
[[modes.schedule]]
days = "sun"
from = "01:30"
to = "03:00"
mode = "lunch"
"""


def test_a_boundary_on_the_spring_forward_day_moves_with_the_clock() -> None:
    config = office("", schedule=SUNDAY_MORNING)
    # Saturday evening in winter time: the next change is Sunday 08:30 summer time
    assert mode_at(config, utc("2026-03-28T20:00:00")) == ModeDecision(
        "night", "schedule", utc("2026-03-29T07:30:00")
    )
    assert mode_at(config, utc("2026-03-29T07:29:59")).name == "night"
    assert mode_at(config, utc("2026-03-29T07:30:00")) == ModeDecision(
        "day", "schedule", utc("2026-03-29T11:30:00")
    )


def test_a_boundary_in_the_skipped_hour_happens_at_the_jump() -> None:
    config = office("", schedule=SUNDAY_SMALL_HOURS)
    # 01:30 local does not exist on 29 March: the first instant past it is 01:00 UTC,
    # when the clock jumps from 01:00 to 02:00
    assert mode_at(config, utc("2026-03-29T00:59:59")) == ModeDecision(
        "night", "schedule", utc("2026-03-29T01:00:00")
    )
    assert mode_at(config, utc("2026-03-29T01:00:00")) == ModeDecision(
        "lunch", "schedule", utc("2026-03-29T02:00:00")
    )


def test_a_boundary_in_the_repeated_hour_follows_the_wall_clock_both_times() -> None:
    config = office("", schedule=SUNDAY_SMALL_HOURS)
    # 01:30 local first happens at 00:30 UTC (summer time) ...
    assert mode_at(config, utc("2026-10-25T00:00:00")) == ModeDecision(
        "night", "schedule", utc("2026-10-25T00:30:00")
    )
    assert mode_at(config, utc("2026-10-25T00:30:00")) == ModeDecision(
        "lunch", "schedule", utc("2026-10-25T03:00:00")
    )
    # ... then the clock goes back to 01:00 (01:00 UTC): before 01:30 again, and the
    # next change is the second 01:30, at 01:30 UTC: later than now, never in the past
    assert mode_at(config, utc("2026-10-25T01:10:00")) == ModeDecision(
        "night", "schedule", utc("2026-10-25T01:30:00")
    )
    assert mode_at(config, utc("2026-10-25T01:30:00")) == ModeDecision(
        "lunch", "schedule", utc("2026-10-25T03:00:00")
    )


def test_walking_from_boundary_to_boundary_always_moves_forward() -> None:
    schedule = ModeSchedule.from_config(office("", schedule=SUNDAY_SMALL_HOURS + SUNDAY_MORNING))
    for start in (utc("2026-03-28T00:00:00"), utc("2026-10-24T00:00:00")):
        when, seen = start, []
        while when < start + timedelta(days=2):
            decision = schedule.decide(when)
            assert decision.until is not None and decision.until > when
            seen.append((when, decision.name))
            when = decision.until
        assert len(seen) < 12
    # The autumn Sunday by `until`: lunch runs to 03:00 local by the wall-clock walk; the
    # brief return to night in the repeated hour (01:00-01:30 WET) is not a boundary of
    # the walk (the service sees it by re-checking every poll, see test_mode_service).
    assert [(when.isoformat(), name) for when, name in seen] == [
        ("2026-10-24T00:00:00+00:00", "night"),
        ("2026-10-25T00:30:00+00:00", "lunch"),
        ("2026-10-25T03:00:00+00:00", "night"),
        ("2026-10-25T08:30:00+00:00", "day"),
        ("2026-10-25T12:30:00+00:00", "night"),
    ]
