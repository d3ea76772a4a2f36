"""Account codes as office staff key them: before a call, during it, or when the class forces one.

The code ends up in the call's record (and from there in the SMDR and the reports). A
refused code gets the special information tone and a `rejected` record; the city line is
never seized for a call that still owes its code.
"""

from __future__ import annotations

import pytest

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from tests.conftest import office_config

FORCED = """
[classes_of_service.forced]
line_groups = ["city"]
allow = ["internal", "local", "national", "mobile", "free"]
account_code = "forced"

[classes_of_service.nocodes]
line_groups = ["city"]
allow = ["internal", "local"]
account_code = "none"
"""


def config_with(classes: dict[str, str]) -> str:
    """The office with extensions moved to other classes of service (by number)."""
    text = office_config(FORCED)
    for number, cos in classes.items():
        head = f'number = "{number}"'
        start = text.index(head)
        end = text.index("class_of_service", start)
        line_end = text.index("\n", end)
        text = text[:end] + f'class_of_service = "{cos}"' + text[line_end:]
    return text


@pytest.fixture
def pbx_config() -> str:
    return config_with({"203": "forced", "204": "nocodes"})


async def test_code_keyed_before_the_call_is_confirmed_and_recorded(pbx) -> None:
    phone, line = pbx.phone("202"), pbx.line("city1")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("*491234#")
    assert await pbx.hears(phone, "confirmation", since=mark)
    mark = phone.mark()
    assert await pbx.hears(phone, "dial", since=mark), "dial tone again after the beeps"
    await phone.dial("9212345678")
    await pbx.wait_state("202", LegState.CONNECTED)
    assert line.calls_dialled == ["212345678"]
    phone.on_hook()
    record = await pbx.last_record()
    assert record.direction == Direction.OUTGOING
    assert record.account_code == "1234"
    assert record.external_number == "212345678"
    assert record.dialled == "9212345678"


async def test_code_keyed_during_the_call_tags_it(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await phone.dial("9212345678")
    await pbx.wait_state("202", LegState.CONNECTED)
    await phone.dial("*49777#")
    await pbx.sim.wait_until(
        lambda: any(s.draft and s.draft.account_code == "777" for s in pbx.app.calls.sessions.values()),
        2.0,
        "account code taken in conversation",
    )
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.account_code == "777"


async def test_forced_class_waits_for_a_code_before_seizing_a_line(pbx) -> None:
    phone, line = pbx.phone("203"), pbx.line("city1")
    phone.off_hook()
    await pbx.wait_state("203", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("9212345678")
    assert await pbx.hears(phone, "confirmation", since=mark), "the cue to key the code"
    assert not line.seized and line.calls_dialled == []
    await phone.dial("55#")
    await pbx.wait_state("203", LegState.CONNECTED)
    assert line.calls_dialled == ["212345678"]
    phone.on_hook()
    record = await pbx.last_record()
    assert record.account_code == "55"
    assert record.disposition == Disposition.ANSWERED


async def test_forced_class_without_a_code_never_reaches_the_line(pbx) -> None:
    phone = pbx.phone("203")
    lines = list(pbx.sim.lines.values())
    phone.off_hook()
    await pbx.wait_state("203", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("9212345678")
    await phone.dial("#")  # an empty code
    assert await pbx.hears(phone, "special_information", since=mark)
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.REJECTED
    assert record.cause == "account_code_invalid"
    assert all(not line.seized and line.calls_dialled == [] for line in lines)


async def test_forced_class_still_reaches_emergency_at_once(pbx) -> None:
    phone, line = pbx.phone("203"), pbx.line("city1")
    phone.off_hook()
    await pbx.wait_state("203", LegState.DIALLING)
    await phone.dial("112")
    await pbx.wait_state("203", LegState.CONNECTED)
    assert line.calls_dialled == ["112"]
    phone.on_hook()
    record = await pbx.last_record()
    assert record.account_code is None and record.destination_kind == "emergency"


async def test_class_without_account_codes_refuses_the_feature(pbx) -> None:
    phone = pbx.phone("204")
    phone.off_hook()
    await pbx.wait_state("204", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("*4912#")
    assert await pbx.hears(phone, "special_information", since=mark)
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.REJECTED
    assert record.cause == "account_code_not_allowed"
    assert record.dialled == "*4912"


async def test_hanging_up_while_keying_a_code_leaves_an_abandoned_record(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await phone.dial("*4912")
    await pbx.sim.wait_until(lambda: pbx.app.calls.sessions, 1.0, "session")
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ABANDONED
    assert record.hangup_side == HangupSide.CALLER
    assert record.cause == "hung_up_account_code"
    assert record.dialled == "*4912"
