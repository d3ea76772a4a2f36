"""`[modes]` config: errors that say where and how to fix, and the pure helpers on it."""

from __future__ import annotations

import pytest
from mode_office import WEEK, office

from firmware.config.load import ConfigError
from firmware.modes.checks import cross_check_modes
from firmware.modes.per_mode import check_per_mode, fallback_chain, pick
from firmware.modes.policy import ModeFeature, may_override, mode_feature, override_extensions


def errors_of(modes: str, schedule: str = "", extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        office(modes, schedule, extra)
    return caught.value.errors


def test_overlapping_ranges_are_refused_with_both_ranges_named() -> None:
    overlap = (
        WEEK + '[[modes.schedule]]\ndays = "wed"\nfrom = "12:00"\nto = "13:00"\nmode = "lunch"\n'
    )
    assert errors_of("", overlap) == [
        "modes: schedule[4] (wed 12:00-13:00 lunch) overlaps schedule[0] "
        "(mon,tue,wed,thu,fri 08:30-12:30 day) on wed: a moment must have one mode; "
        "schedule[4] (wed 12:00-13:00 lunch) overlaps schedule[1] "
        "(mon,tue,wed,thu,fri 12:30-14:00 lunch) on wed: a moment must have one mode"
    ]


def test_touching_ranges_are_fine() -> None:
    assert office("", WEEK).modes.schedule[1].start == "12:30"


def test_unknown_modes_are_named_with_where_they_are_used() -> None:
    evening = '[[modes.schedule]]\ndays = "fri"\nfrom = "18:00"\nto = "20:00"\nmode = "evening"\n'
    assert errors_of('outside_mode = "closed"', evening) == [
        "modes: outside_mode: 'closed' is not a mode; modes are day, lunch, night, holiday "
        "(add others to modes.names); schedule[0].mode: 'evening' is not a mode; modes are "
        "day, lunch, night, holiday (add others to modes.names)"
    ]
    added = office('names = ["evening"]', evening)
    assert added.modes.all_names == ("day", "lunch", "night", "holiday", "evening")


def test_an_unknown_country_is_refused_with_examples() -> None:
    assert errors_of('country = "XX"') == [
        "modes: country: 'XX' is not a country the holidays package knows; use an ISO 3166-1 "
        "alpha-2 code such as 'PT', 'ES', 'FR', 'DE', 'GB' or 'US'"
    ]


def test_an_unknown_subdivision_lists_the_valid_ones() -> None:
    (error,) = errors_of('country = "pt"\nsubdivision = "Lisbon"')
    assert error.startswith("modes: subdivision: 'Lisbon' is not a subdivision of PT; use one of ")
    assert "11 (Lisboa)" in error and "13 (Porto)" in error
    assert errors_of('subdivision = "11"') == [
        "modes: subdivision: set country too (e.g. country = 'PT')"
    ]


def test_an_unknown_holiday_category() -> None:
    assert errors_of('country = "PT"\nholiday_categories = ["bank"]') == [
        "modes: holiday_categories: 'bank' is not a category of PT; use optional, public"
    ]


@pytest.mark.parametrize(
    ("schedule", "error"),
    [
        (
            'days = "mon"\nfrom = "18:00"\nto = "08:00"\nmode = "night"',
            "modes.schedule[0]: from 18:00 is not before to 08:00: a range may not cross "
            "midnight (split it into 18:00-24:00 and 00:00-08:00 on the next day), and night "
            "hours need no range: they are outside_mode",
        ),
        (
            'days = "mon-funday"\nfrom = "08:00"\nto = "09:00"\nmode = "day"',
            "modes.schedule[0].days: day 'mon-funday' is not a weekday or range of them; use "
            "mon, tue, wed, thu, fri, sat, sun or a range like 'mon-fri'",
        ),
        (
            'days = "fri-mon"\nfrom = "08:00"\nto = "09:00"\nmode = "day"',
            "modes.schedule[0].days: day range 'fri-mon' runs backwards; write it as 'mon-fri'",
        ),
        (
            'days = "mon"\nfrom = "8:30"\nto = "09:00"\nmode = "day"',
            "modes.schedule[0].from: time '8:30' must be HH:MM in 24-hour form, e.g. '08:30' "
            "or '24:00'",
        ),
    ],
)
def test_bad_ranges(schedule: str, error: str) -> None:
    assert errors_of("", "[[modes.schedule]]\n" + schedule) == [error]


def test_a_range_may_end_at_midnight() -> None:
    config = office("", '[[modes.schedule]]\ndays = "sat,sun"\nfrom = "20:00"\nto = "24:00"\n'
                        'mode = "lunch"')  # fmt: skip
    assert config.modes.schedule[0].days == ("sat", "sun")
    assert config.modes.schedule[0].end_minute == 1440


@pytest.mark.parametrize(
    ("closed", "error"),
    [
        (
            "date = 2026-08-01\nfrom = 2026-08-01\nto = 2026-08-02",
            "modes.closed[0]: give either date, or from and to, not both",
        ),
        (
            "from = 2026-08-01",
            "modes.closed[0]: give date = YYYY-MM-DD, or both from and to (inclusive)",
        ),
        (
            "from = 2026-08-15\nto = 2026-08-01",
            "modes.closed[0]: to 2026-08-01 is before from 2026-08-15",
        ),
        (
            "from = 2026-08-01\nto = 2027-08-15",
            "modes.closed[0]: from 2026-08-01 to 2027-08-15 is 380 days: "
            "a typo in the year? (at most 366)",
        ),
        (
            'date = 2026-08-01\nmode = "vacation"',
            "modes: closed[0].mode: 'vacation' is not a mode; modes are day, lunch, night, holiday "
            "(add others to modes.names)",
        ),
    ],
)
def test_bad_closures(closed: str, error: str) -> None:
    assert errors_of("", extra="[[modes.closed]]\n" + closed) == [error]


def test_a_fallback_loop_is_refused() -> None:
    assert errors_of('[modes.fallbacks]\nnight = "lunch"') == [
        "modes: fallbacks: lunch -> night -> lunch is a loop; the chain must end at default; "
        "fallbacks: night -> lunch -> night is a loop; the chain must end at default; "
        "fallbacks: holiday -> night -> lunch -> night is a loop; the chain must end at default"
    ]
    assert errors_of('[modes.fallbacks]\nday = "night"') == [
        "modes: fallbacks.day: the default mode ends every chain, it has no fallback"
    ]


def test_per_mode_choices_follow_the_fallback_chain() -> None:
    modes = office('names = ["evening"]').modes
    assert fallback_chain(modes, "holiday") == ("holiday", "night", "day")
    assert fallback_chain(modes, "evening") == ("evening", "day")
    destinations = {"day": "201", "night": "announce_closed"}
    assert pick(destinations, "day", modes) == "201"
    assert pick(destinations, "lunch", modes) == "announce_closed"
    assert pick(destinations, "holiday", modes) == "announce_closed"
    assert pick(destinations, "evening", modes) == "201"
    assert pick({"night": "x"}, "day", modes) is None
    assert list(check_per_mode({"nite": "x", "night": "y"}, modes, "routes[0].destination")) == [
        "routes[0].destination.nite: 'nite' is not a mode; modes are day, lunch, night, holiday, "
        "evening",
        "routes[0].destination: no entry for mode(s) day, evening: add one for 'day' (the "
        "default every mode falls back to)",
    ]
    assert list(check_per_mode(destinations, modes, "x")) == []


def test_who_may_override_by_feature_code() -> None:
    listed = office('override_extensions = ["202", "203"]')
    assert may_override(listed, "202") and may_override(listed, "203")
    assert not may_override(listed, "201") and not may_override(listed, None)
    operator_only = office("")  # the default office's operator is 201
    assert override_extensions(operator_only) == ("201",)
    assert may_override(operator_only, "201") and not may_override(operator_only, "202")


def test_mode_feature_names() -> None:
    assert mode_feature("mode_night") == ModeFeature("night")
    assert mode_feature("mode_auto") == ModeFeature(None)
    assert mode_feature("account_code") is None
    assert mode_feature(None) is None


def test_cross_checks_with_other_sections() -> None:
    codes = {"account_code": "*49", "mode_night": "*61", "mode_evening": "*62", "mode_auto": "*60"}
    base = office("")
    modes = base.modes.model_copy(update={"override_extensions": ("299",)})
    config = base.model_copy(update={"feature_codes": codes, "modes": modes})
    with pytest.raises(ConfigError, match=r"modes\.override_extensions: no extension 299"):
        office('override_extensions = ["299"]')  # loading a config runs the same checks
    assert list(cross_check_modes(config)) == [
        "modes.override_extensions: no extension 299",
        "feature_codes.mode_evening: 'evening' is not a mode; name mode codes mode_<mode> "
        "(day, lunch, night, holiday) or mode_auto",
    ]
    nobody = office("").model_copy(
        update={"feature_codes": codes, "numbering": office("").numbering.model_copy(
            update={"operator": None, "operator_code": None})}
    )  # fmt: skip
    assert list(cross_check_modes(nobody))[-1] == (
        "modes.override_extensions: feature codes mode_night, mode_evening, mode_auto are set but "
        "no extension may use them; list extensions here (or set numbering.operator)"
    )
