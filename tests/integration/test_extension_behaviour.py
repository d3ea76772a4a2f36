"""What an office user hears and what gets recorded when using an extension.

Every test drives the real core through the simulated line card: phones are lifted,
digits keyed, tones detected in what the appliance sent to the handset.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from firmware.media.mixer import FRAME_SAMPLES, TICK_S
from tests.conftest import office_config

# ----- helpers ------------------------------------------------------------------------------


async def falls_silent(port, since: int, seconds: float = 0.4, timeout: float = 3.0) -> bool:
    """True once the last `seconds` of what `port` was sent are digital silence."""
    needed = round(seconds / TICK_S) * FRAME_SAMPLES
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        heard = port.heard(since)
        if heard.size >= needed and not np.any(heard[-needed:]):
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(TICK_S)


async def connect(pbx, caller: str, callee: str) -> None:
    a, b = pbx.phone(caller), pbx.phone(callee)
    a.off_hook()
    await pbx.wait_state(caller, LegState.DIALLING)
    await a.dial(callee)
    await b.wait_ringing()
    b.off_hook()
    await pbx.wait_state(caller, LegState.CONNECTED)
    await pbx.wait_state(callee, LegState.CONNECTED)


def with_extension(number: str, replacement: str) -> str:
    """The office config with extension `number`'s block replaced (empty: removed)."""
    text = office_config()
    start = text.index(f'[[extensions]]\nnumber = "{number}"')
    end = text.find("[[extensions]]", start + 1)
    end = len(text) if end == -1 else end
    return text[:start] + replacement + text[end:]


FORWARDING = with_extension(
    "203",
    '[[extensions]]\nnumber = "203"\nname = "Accounts"\nport = 3\n'
    'class_of_service = "staff"\nforward_no_answer = "204"\n\n',
)
NO_EXTENSION_ON_PORT_8 = with_extension("208", "")
FORWARDING_LOOP = FORWARDING.replace(
    'number = "204"\nname = "Support"\nport = 4\nclass_of_service = "staff"\n',
    'number = "204"\nname = "Support"\nport = 4\nclass_of_service = "staff"\n'
    'forward_no_answer = "203"\n',
)
assert FORWARDING_LOOP.count("forward_no_answer") == 2


# ----- lifting the handset ------------------------------------------------------------------


async def test_permanent_signal_gives_congestion_then_lockout_silence_and_no_record(pbx) -> None:
    phone = pbx.phone("202")
    mark = phone.mark()
    phone.off_hook()
    assert await pbx.hears(phone, "dial", since=mark)
    # No digit within first_digit_s (1.5 s): congestion, then silence (lock-out).
    assert await pbx.hears_cadence(phone, "congestion", since=mark, timeout=3.0)
    await pbx.wait_state("202", LegState.CLEARING)
    assert await falls_silent(phone, mark, seconds=0.4, timeout=3.0), "lock-out is silent"
    # Locked out: no dial tone comes back while the handset stays off hook.
    silent_from = phone.mark()
    assert not await pbx.hears(phone, "dial", since=silent_from, timeout=0.4)
    assert pbx.channel("202").state == LegState.CLEARING
    assert pbx.app.calls.counters.permanent_signal == 1
    phone.on_hook()
    await pbx.wait_state("202", LegState.IDLE)
    await pbx.wait_idle()
    assert await pbx.records() == [], "permanent signal writes no call record"
    # Back on hook the lock-out is over: a new lift gets dial tone at once.
    phone.off_hook()
    assert await pbx.hears(phone, "dial")
    phone.on_hook()
    await pbx.wait_state("202", LegState.IDLE)


async def test_hanging_up_while_dialling_records_an_abandoned_call(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await phone.dial("20")
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ABANDONED
    assert record.hangup_side == HangupSide.CALLER
    assert (record.caller_number, record.dialled) == ("202", "20")
    assert record.answer is None
    assert pbx.channel("202").state == LegState.IDLE


async def test_hanging_up_before_any_digit_writes_no_record(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    assert await pbx.hears(phone, "dial")
    phone.on_hook()
    await pbx.wait_state("202", LegState.IDLE)
    await pbx.wait_idle()
    assert await pbx.records() == []


@pytest.mark.parametrize("digits", ["299", "3"])
async def test_unknown_number_gives_special_information_tone_and_invalid_record(
    pbx, digits
) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial(digits)
    assert await pbx.hears(phone, "special_information", since=mark)
    await pbx.wait_state("202", LegState.CLEARING)
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.INVALID
    assert record.caller_number == "202"
    # The number is rejected as soon as no number can start with it ("29" for "299").
    assert digits.startswith(record.dialled) and record.dialled
    assert record.answer is None


async def test_unanswered_call_gives_congestion_after_ring_timeout_and_no_answer_record(
    pbx,
) -> None:
    a, b = pbx.phone("202"), pbx.phone("203")
    a.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await a.dial("203")
    await b.wait_ringing()
    mark = a.mark()
    await b.wait_not_ringing(timeout=4.0)  # ring_timeout_s = 2
    assert await pbx.hears_cadence(a, "congestion", since=mark)
    assert pbx.channel("203").state == LegState.IDLE
    a.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.NO_ANSWER
    assert (record.caller_number, record.dialled, record.called_extension) == ("202", "203", "203")
    assert record.answered_extension is None


@pytest.mark.parametrize("pbx_config", [FORWARDING], ids=["203-forwards-to-204"])
async def test_forward_on_no_answer_rings_the_target_which_can_answer(pbx) -> None:
    a, b, c = pbx.phone("202"), pbx.phone("203"), pbx.phone("204")
    a.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await a.dial("203")
    await b.wait_ringing()
    assert c.ringing is None
    forwarded = await c.wait_ringing(timeout=4.0)
    assert forwarded.caller_number == "202"
    assert b.ringing is None, "the first extension stops ringing when the call moves on"
    c.off_hook()
    await pbx.wait_state("204", LegState.CONNECTED)
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.speech_both_ways(a, c)
    c.on_hook()
    a.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert (record.dialled, record.called_extension, record.answered_extension) == (
        "203",
        "203",
        "204",
    )


@pytest.mark.parametrize("pbx_config", [FORWARDING_LOOP], ids=["203-and-204-forward-to-each-other"])
async def test_forwarding_loop_stops_after_each_extension_rang_once(pbx) -> None:
    a, b, c = pbx.phone("202"), pbx.phone("203"), pbx.phone("204")
    a.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await a.dial("203")
    await b.wait_ringing()
    await c.wait_ringing(timeout=4.0)
    mark = a.mark()
    await c.wait_not_ringing(timeout=4.0)
    assert await pbx.hears_cadence(a, "congestion", since=mark)
    assert b.rings_received == 1 and c.rings_received == 1, "nobody is rung twice"
    a.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.NO_ANSWER
    assert record.called_extension == "203"


async def test_calling_yourself_gives_busy_tone(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    mark = phone.mark()
    await phone.dial("202")
    assert await pbx.hears_cadence(phone, "busy", since=mark)
    assert phone.ringing is None
    phone.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.BUSY
    assert record.dialled == "202"


async def test_operator_code_rings_the_operator(pbx) -> None:
    a, operator = pbx.phone("204"), pbx.phone("201")
    a.off_hook()
    await pbx.wait_state("204", LegState.DIALLING)
    await a.dial("0")
    ringing = await operator.wait_ringing()
    assert (ringing.caller_number, ringing.caller_name) == ("204", "Support")
    operator.off_hook()
    await pbx.wait_state("204", LegState.CONNECTED)
    await pbx.speech_both_ways(a, operator)
    a.on_hook()
    operator.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert (record.dialled, record.called_extension, record.answered_extension) == (
        "0",
        "201",
        "201",
    )


@pytest.mark.parametrize("pbx_config", [NO_EXTENSION_ON_PORT_8], ids=["port-8-unassigned"])
async def test_port_without_an_extension_gives_congestion_when_lifted(pbx) -> None:
    assert pbx.app.config.extension("208") is None
    phone = pbx.sim.phones[8]
    mark = phone.mark()
    phone.off_hook()
    assert await pbx.hears_cadence(phone, "congestion", since=mark)
    assert pbx.app.line_card.channels[8].state == LegState.CLEARING
    assert not pbx.app.calls.sessions, "no call is started from an unassigned port"
    phone.on_hook()
    await pbx.sim.wait_until(
        lambda: pbx.app.line_card.channels[8].state == LegState.IDLE, 2.0, "port 8 idle"
    )
    assert await pbx.records() == []


async def test_caller_hanging_up_while_callee_rings_stops_ringing_and_records_abandoned(
    pbx,
) -> None:
    a, b = pbx.phone("202"), pbx.phone("203")
    a.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await a.dial("203")
    await b.wait_ringing()
    a.on_hook()
    await b.wait_not_ringing(timeout=2.0)
    record = await pbx.last_record()
    assert record.disposition == Disposition.ABANDONED
    assert record.hangup_side == HangupSide.CALLER
    assert (record.caller_number, record.called_extension) == ("202", "203")
    assert record.answer is None
    assert pbx.channel("203").state == LegState.IDLE


async def test_calling_an_extension_already_in_a_call_gives_busy(pbx) -> None:
    await connect(pbx, "202", "203")
    c = pbx.phone("204")
    c.off_hook()
    await pbx.wait_state("204", LegState.DIALLING)
    mark = c.mark()
    await c.dial("203")
    assert await pbx.hears_cadence(c, "busy", since=mark)
    assert pbx.phone("203").ringing is None
    # The call in progress is not disturbed.
    assert pbx.channel("202").state == LegState.CONNECTED
    await pbx.speech_both_ways(pbx.phone("202"), pbx.phone("203"))
    c.on_hook()
    pbx.phone("202").on_hook()
    pbx.phone("203").on_hook()
    await pbx.wait_idle()
    records = await pbx.records()
    by_caller = {r.caller_number: r for r in records}
    assert by_caller["204"].disposition == Disposition.BUSY
    assert by_caller["204"].dialled == "203"
    assert by_caller["202"].disposition == Disposition.ANSWERED
    assert by_caller["202"].direction == Direction.INTERNAL
