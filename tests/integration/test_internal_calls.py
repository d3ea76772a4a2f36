"""Office calls between analogue extensions, heard as a person would hear them."""

from __future__ import annotations

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone


async def test_lifting_a_phone_gives_dial_tone_and_first_digit_stops_it(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    assert await pbx.hears(phone, "dial")
    await phone.dial("2")
    mark = phone.mark()
    await pbx.sim.wait_until(lambda: phone.audio.position > mark + 10, 2, "frames")
    assert not await pbx.hears(phone, "dial", since=mark + 3, timeout=0.3)
    phone.on_hook()
    await pbx.wait_idle()


async def test_call_between_two_extensions_has_speech_both_ways_and_a_record(pbx) -> None:
    a, b = pbx.phone("202"), pbx.phone("203")
    a.off_hook()
    await a.dial("203")
    ringing = await b.wait_ringing()
    assert (ringing.caller_number, ringing.caller_name) == ("202", "Sales")
    assert await pbx.hears(a, "ringback")
    b.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    mark = b.mark()
    a.say(make_tone(1004))
    assert await pbx.hears(b, (1004.0,), since=mark)
    mark = a.mark()
    b.say(make_tone(1400))
    assert await pbx.hears(a, (1400.0,), since=mark)
    b.on_hook()
    assert await pbx.hears(a, "busy"), "the party left alone hears busy tone"
    a.on_hook()
    record = await pbx.last_record()
    assert record.direction == Direction.INTERNAL
    assert record.disposition == Disposition.ANSWERED
    assert record.hangup_side == HangupSide.CALLEE
    assert (record.caller_number, record.dialled, record.answered_extension) == (
        "202",
        "203",
        "203",
    )
    assert record.billable_s > 0


async def test_busy_extension_gives_busy_tone(pbx) -> None:
    a, b = pbx.phone("202"), pbx.phone("203")
    b.off_hook()
    await pbx.wait_state("203", LegState.DIALLING)
    a.off_hook()
    await a.dial("203")
    assert await pbx.hears(a, "busy")
    a.on_hook()
    b.on_hook()
    await pbx.wait_idle()
    records = [r for r in await pbx.records() if r.caller_number == "202"]
    assert records[0].disposition == Disposition.BUSY
