"""Class of service: who may call where, decided before any city line is touched.

Toll-fraud protection must hold as an office user meets it: a forbidden number gives the
special information tone and a `rejected` record, and the exchange never even sees the
line seized. The pure dial plan is checked table-driven on the default office config.
"""

from __future__ import annotations

import pytest

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.dialplan import DialPlan, RouteKind
from firmware.calls.digitmap import MatchState
from firmware.calls.lifecycle import LegState
from firmware.config.load import default_config_text, parse_config
from firmware.lines.protocol import Dial, HookSet
from firmware.selftest import test_tone as make_tone

# ----- in the office ------------------------------------------------------------------------


def line_commands(pbx) -> list[object]:
    """Every seizure (hook off) and dialling the core asked of the card on the FXO ports."""
    fxo = set(pbx.sim.lines)
    return [
        m
        for m in pbx.sim.received
        if isinstance(m, HookSet | Dial) and m.port in fxo and (isinstance(m, Dial) or m.off_hook)
    ]


@pytest.mark.parametrize(
    ("extension", "digits", "cause", "kind"),
    [
        ("202", "900351234567", "cos:international", "international"),
        ("208", "9212345678", "cos:line_group:city", "local"),
        ("202", "9612345678", "cos:premium", "premium"),
        ("206", "9712345678", "cos:premium", "premium"),
    ],
    ids=["staff-international", "lobby-local", "staff-premium", "manager-premium"],
)
async def test_forbidden_number_gives_special_information_tone_and_never_seizes_a_line(
    pbx, extension, digits, cause, kind
) -> None:
    phone = pbx.phone(extension)
    lines = list(pbx.sim.lines.values())
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    mark = phone.mark()
    await phone.dial(digits)  # an open number (international) ends after inter_digit_s
    assert await pbx.hears(phone, "special_information", since=mark)
    await pbx.wait_state(extension, LegState.CLEARING)
    assert all(not line.seized for line in lines)
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.REJECTED
    assert record.cause == cause
    assert record.cause.startswith("cos:")
    assert (record.caller_number, record.dialled) == (extension, digits)
    assert record.destination_kind == kind
    assert record.line is None and record.answer is None
    assert record.hangup_side == HangupSide.SYSTEM
    assert all(not line.seized and line.calls_dialled == [] for line in lines)
    assert line_commands(pbx) == [], "the card was never asked to seize or dial a line"


async def test_manager_may_dial_international(pbx) -> None:
    manager, line = pbx.phone("201"), pbx.line("city1")
    manager.off_hook()
    await pbx.wait_state("201", LegState.DIALLING)
    await manager.dial("900351234567#")  # '#' ends the open number without waiting
    await pbx.wait_state("201", LegState.CONNECTED)
    assert line.calls_dialled == ["00351234567"]
    assert [type(m) for m in line_commands(pbx)] == [HookSet, Dial], "seen when it does happen"
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    mark = line.mark()
    manager.say(make_tone(1004))
    assert await pbx.hears(line, (1004.0,), since=mark)
    manager.on_hook()
    await pbx.sim.wait_until(lambda: not line.seized, 3.0, "line released")
    record = await pbx.last_record()
    assert record.direction == Direction.OUTGOING
    assert record.disposition == Disposition.ANSWERED
    assert record.destination_kind == "international"
    assert (record.dialled, record.line) == ("900351234567", "city1")


async def test_staff_may_dial_a_mobile_number(pbx) -> None:
    staff, line = pbx.phone("205"), pbx.line("city1")
    staff.off_hook()
    await pbx.wait_state("205", LegState.DIALLING)
    await staff.dial("9912345678")
    await pbx.wait_state("205", LegState.CONNECTED)
    assert line.calls_dialled == ["912345678"]
    staff.on_hook()
    await pbx.sim.wait_until(lambda: not line.seized, 3.0, "line released")
    record = await pbx.last_record()
    assert record.destination_kind == "mobile"
    assert record.disposition == Disposition.ANSWERED


# ----- the dial plan, table-driven ----------------------------------------------------------

CONFIG = parse_config(default_config_text(), "<default>")
PLAN = DialPlan(CONFIG)


def caller(number: str | None):
    return None if number is None else CONFIG.extension(number)


ROUTES = [
    # caller, dialled, kind, extension, number on the line, destination kind, reason
    ("202", "203", RouteKind.INTERNAL, "203", "", "internal", ""),
    ("208", "201", RouteKind.INTERNAL, "201", "", "internal", ""),
    ("202", "0", RouteKind.INTERNAL, "201", "", "internal", ""),
    ("208", "112", RouteKind.EMERGENCY, None, "112", "emergency", ""),
    ("208", "9112", RouteKind.EMERGENCY, None, "112", "emergency", ""),
    ("202", "112", RouteKind.EMERGENCY, None, "112", "emergency", ""),
    (None, "112", RouteKind.EMERGENCY, None, "112", "emergency", ""),
    ("202", "9212345678", RouteKind.OUTSIDE, None, "212345678", "local", ""),
    ("202", "9312345678", RouteKind.OUTSIDE, None, "312345678", "national", ""),
    ("202", "9512345678", RouteKind.OUTSIDE, None, "512345678", "national", ""),
    ("202", "9912345678", RouteKind.OUTSIDE, None, "912345678", "mobile", ""),
    ("202", "9962345678", RouteKind.OUTSIDE, None, "962345678", "mobile", ""),
    ("202", "9800123456", RouteKind.OUTSIDE, None, "800123456", "free", ""),
    ("202", "9808123456", RouteKind.OUTSIDE, None, "808123456", "free", ""),
    ("201", "900351234567", RouteKind.OUTSIDE, None, "00351234567", "international", ""),
    ("206", "9001", RouteKind.OUTSIDE, None, "001", "international", ""),
    (
        "202",
        "900351234567",
        RouteKind.REJECTED,
        None,
        "00351234567",
        "international",
        "cos:international",
    ),
    ("202", "9612345678", RouteKind.REJECTED, None, "612345678", "premium", "cos:premium"),
    ("201", "9712345678", RouteKind.REJECTED, None, "712345678", "premium", "cos:premium"),
    ("208", "9212345678", RouteKind.REJECTED, None, "212345678", "local", "cos:line_group:city"),
    (
        "208",
        "900351234567",
        RouteKind.REJECTED,
        None,
        "00351234567",
        "international",
        "cos:line_group:city",
    ),
    (None, "9212345678", RouteKind.REJECTED, None, "212345678", "local", "cos:line_group:city"),
    ("202", "3", RouteKind.INVALID, None, "", "", "no_such_number"),
    ("202", "299", RouteKind.INVALID, None, "", "", "no_such_number"),
    ("202", "209", RouteKind.INVALID, None, "", "", "no_such_number"),
    ("202", "20", RouteKind.INVALID, None, "", "", "no_such_number"),
    ("202", "9812345678", RouteKind.INVALID, None, "", "", "no_such_number"),
    ("202", "92123456789", RouteKind.INVALID, None, "", "", "no_such_number"),
]


@pytest.mark.parametrize(
    ("number", "digits", "kind", "extension", "line_number", "destination", "reason"),
    ROUTES,
    ids=[f"{row[0]}-dials-{row[1]}" for row in ROUTES],
)
def test_dial_plan_route(number, digits, kind, extension, line_number, destination, reason) -> None:
    plan = PLAN.route(caller(number), digits)
    assert plan.kind == kind
    assert plan.dialled == digits
    assert plan.extension == extension
    assert plan.number == line_number
    assert plan.destination_kind == destination
    assert plan.reason == reason
    if kind in (RouteKind.OUTSIDE, RouteKind.EMERGENCY):
        assert plan.line_groups == ("city",)
    else:
        assert plan.line_groups == (), "only a call that may go out names line groups"


@pytest.mark.parametrize(
    ("digits", "state"),
    [
        ("2", MatchState.PARTIAL),
        ("203", MatchState.COMPLETE),
        ("0", MatchState.COMPLETE),
        ("112", MatchState.COMPLETE),
        ("9", MatchState.PARTIAL),
        ("9112", MatchState.COMPLETE),
        ("9212345678", MatchState.COMPLETE),
        ("9001", MatchState.AMBIGUOUS),  # international numbers are open: '#' or timeout end them
        ("900351234567", MatchState.AMBIGUOUS),
        ("3", MatchState.NO_MATCH),
        ("29", MatchState.NO_MATCH),
    ],
)
def test_dial_plan_knows_when_a_number_is_complete(digits, state) -> None:
    assert PLAN.match(digits).state == state


def test_emergency_needs_no_class_of_service() -> None:
    for extension in CONFIG.extensions:
        assert PLAN.route(extension, "112").kind == RouteKind.EMERGENCY
        assert PLAN.route(extension, "9112").kind == RouteKind.EMERGENCY


def test_no_extension_may_reach_a_premium_number() -> None:
    for extension in CONFIG.extensions:
        plan = PLAN.route(extension, "9612345678")
        assert plan.kind == RouteKind.REJECTED, extension.number
