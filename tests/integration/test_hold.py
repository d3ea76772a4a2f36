"""Consultation hold with hook flash, as the people on the three phones hear it.

202 talks to 203; 202 flashes: 203 is parked hearing the hold tone and 202 gets dial tone
to consult someone else (204). Flashing again drops the consulted party and returns to 203;
hanging up with 203 still on hold rings 202 back (recall).
"""

from __future__ import annotations

import pytest

from firmware.calls.cdr import Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from firmware.selftest import test_tone as make_tone
from tests.conftest import FAST_TIMERS, office_config

# Clearing tones last long enough here to tell busy from congestion by their cadence.
TIMERS = FAST_TIMERS.replace("lockout_tone_s = 1.0", "lockout_tone_s = 4.0")
assert TIMERS != FAST_TIMERS


@pytest.fixture
def pbx_config() -> str:
    return office_config(timers=TIMERS)


# ----- helpers ------------------------------------------------------------------------------


async def talking(pbx, caller: str, callee: str) -> None:
    a, b = pbx.phone(caller), pbx.phone(callee)
    a.off_hook()
    await pbx.wait_state(caller, LegState.DIALLING)
    await a.dial(callee)
    await b.wait_ringing()
    b.off_hook()
    await pbx.wait_state(caller, LegState.CONNECTED)
    await pbx.wait_state(callee, LegState.CONNECTED)


async def put_on_hold(pbx) -> None:
    """202 (talking to 203) flashes: 203 hears the hold tone, 202 dial tone."""
    holder, held = pbx.phone("202"), pbx.phone("203")
    held_mark, holder_mark = held.mark(), holder.mark()
    holder.flash()
    await pbx.wait_state("203", LegState.HELD)
    await pbx.wait_state("202", LegState.DIALLING)
    assert await pbx.hears_cadence(held, "hold", since=held_mark, timeout=2.0)
    assert await pbx.hears(holder, "dial", since=holder_mark)


async def consult(pbx, number: str = "204") -> None:
    """On hold, 202 dials `number`, which rings and answers."""
    await pbx.phone("202").dial(number)
    consulted = pbx.phone(number)
    ringing = await consulted.wait_ringing()
    assert ringing.caller_number == "202"
    consulted.off_hook()
    await pbx.wait_state(number, LegState.CONNECTED)
    await pbx.wait_state("202", LegState.CONNECTED)


# ----- tests --------------------------------------------------------------------------------


async def test_flash_puts_the_other_party_on_hold_and_gives_dial_tone(pbx) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    holder, held = pbx.phone("202"), pbx.phone("203")
    mark = held.mark()
    holder.say(make_tone(1004))
    assert not await pbx.hears(held, (1004.0,), since=mark, timeout=0.5), "held party hears nothing"
    held.on_hook()
    holder.on_hook()
    await pbx.wait_idle()


async def test_consultation_call_is_private_and_a_second_flash_returns_to_the_held_party(
    pbx,
) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    await consult(pbx, "204")
    holder, held, consulted = pbx.phone("202"), pbx.phone("203"), pbx.phone("204")
    assert pbx.channel("203").state == LegState.HELD
    await pbx.speech_both_ways(holder, consulted)
    # The held party is not in the consultation, either way.
    mark = held.mark()
    holder.say(make_tone(1004))
    consulted.say(make_tone(1004))
    assert not await pbx.hears(held, (1004.0,), since=mark, timeout=0.5)
    holder_mark, consulted_mark = holder.mark(), consulted.mark()
    held.say(make_tone(1400))
    assert not await pbx.hears(holder, (1400.0,), since=holder_mark, timeout=0.5)
    assert not await pbx.hears(consulted, (1400.0,), since=consulted_mark, timeout=0.1)

    # Flash again: the consulted party is dropped (busy), back to the held party.
    mark = consulted.mark()
    holder.flash()
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.wait_state("204", LegState.CLEARING)
    assert await pbx.hears_cadence(consulted, "busy", since=mark)
    await pbx.speech_both_ways(holder, held)
    mark = consulted.mark()
    holder.say(make_tone(1004))
    assert not await pbx.hears(consulted, (1004.0,), since=mark, timeout=0.5)

    consulted.on_hook()
    await pbx.wait_state("204", LegState.IDLE)
    held.on_hook()
    assert await pbx.hears_cadence(holder, "busy")
    holder.on_hook()
    await pbx.wait_idle()
    records = {r.dialled: r for r in await pbx.records()}
    assert records["203"].disposition == Disposition.ANSWERED
    assert records["203"].answered_extension == "203"
    assert records["204"].disposition == Disposition.ANSWERED
    assert (records["204"].caller_number, records["204"].answered_extension) == ("202", "204")


async def test_flashing_while_the_consulted_phone_rings_stops_it_and_returns(pbx) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    holder, held, consulted = pbx.phone("202"), pbx.phone("203"), pbx.phone("204")
    await holder.dial("204")
    await consulted.wait_ringing()
    holder.flash()
    await consulted.wait_not_ringing(timeout=2.0)
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.wait_state("202", LegState.CONNECTED)
    assert pbx.channel("204").state == LegState.IDLE
    await pbx.speech_both_ways(holder, held)
    holder.on_hook()
    held.on_hook()
    await pbx.wait_idle()
    records = {r.dialled: r for r in await pbx.records()}
    assert records["204"].disposition == Disposition.ABANDONED
    assert records["203"].disposition == Disposition.ANSWERED


async def test_hanging_up_with_a_party_on_hold_rings_back_and_answering_reconnects(pbx) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    holder, held = pbx.phone("202"), pbx.phone("203")
    holder.on_hook()
    recall = await holder.wait_ringing(timeout=2.0)
    assert recall.caller_number == "203", "the recall shows who is waiting"
    assert pbx.channel("203").state == LegState.HELD
    # The held party stays parked (hold tone running, no ringback) while 202 is rung.
    assert pbx.app.mixer.is_playing(pbx.channel("203").slot)
    holder.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.speech_both_ways(holder, held)
    held.on_hook()
    assert await pbx.hears_cadence(holder, "busy")
    holder.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert (record.caller_number, record.answered_extension) == ("202", "203")


async def test_unanswered_recall_ends_the_call_and_releases_the_held_party(pbx) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    holder, held = pbx.phone("202"), pbx.phone("203")
    holder.on_hook()
    await holder.wait_ringing(timeout=2.0)
    mark = held.mark()
    await holder.wait_not_ringing(timeout=4.0)  # ring_timeout_s = 2
    assert await pbx.hears_cadence(held, "busy", since=mark)
    await pbx.wait_state("203", LegState.CLEARING)
    held.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.cause == "recall_not_answered"


async def test_held_party_hanging_up_ends_the_call(pbx) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    holder, held = pbx.phone("202"), pbx.phone("203")
    mark = holder.mark()
    held.on_hook()
    assert await pbx.hears_cadence(holder, "busy", since=mark)
    await pbx.wait_state("202", LegState.CLEARING)
    await pbx.wait_state("203", LegState.IDLE)
    # The holder can no longer dial a consultation: the call is over.
    counters = pbx.app.calls.counters
    ignored = counters.events_ignored
    await holder.dial("204")
    await pbx.sim.wait_until(lambda: counters.events_ignored >= ignored + 3, 2.0, "digits ignored")
    assert pbx.phone("204").ringing is None
    holder.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.hangup_side == HangupSide.CALLEE
    assert record.cause == "held_party_cleared"


async def test_consulted_party_hanging_up_returns_the_holder_to_the_held_party(pbx) -> None:
    await talking(pbx, "202", "203")
    await put_on_hold(pbx)
    await consult(pbx, "204")
    holder, held, consulted = pbx.phone("202"), pbx.phone("203"), pbx.phone("204")
    consulted.on_hook()
    await pbx.wait_state("204", LegState.IDLE)
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.speech_both_ways(holder, held)
    holder.on_hook()
    held.on_hook()
    await pbx.wait_idle()
    records = {r.dialled: r for r in await pbx.records()}
    assert records["204"].disposition == Disposition.ANSWERED
    assert records["203"].disposition == Disposition.ANSWERED


async def test_a_city_caller_can_be_held_while_the_extension_consults_a_colleague(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await sales.dial("9212345678")
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    line_mark = line.mark()
    sales.flash()
    await pbx.wait_state("city1", LegState.HELD)
    assert await pbx.hears_cadence(line, "hold", since=line_mark, timeout=2.0)
    assert line.seized, "holding a city caller keeps the line"
    await consult(pbx, "204")
    colleague = pbx.phone("204")
    await pbx.speech_both_ways(sales, colleague)
    mark = line.mark()
    sales.say(make_tone(1004))
    assert not await pbx.hears(line, (1004.0,), since=mark, timeout=0.5), "the caller hears nothing"
    sales.flash()
    await pbx.wait_state("city1", LegState.CONNECTED)
    await pbx.speech_both_ways(sales, line)
    colleague.on_hook()
    sales.on_hook()
    await pbx.sim.wait_until(lambda: not line.seized, 3.0, "line released")
    await pbx.wait_idle()
    records = {r.dialled: r for r in await pbx.records()}
    assert records["9212345678"].disposition == Disposition.ANSWERED
    assert records["9212345678"].line == "city1"
    assert records["204"].answered_extension == "204"


async def test_recall_with_a_city_caller_on_hold_reconnects_to_the_line(pbx) -> None:
    line, reception = pbx.line("city1"), pbx.phone("201")
    line.ring("212345678", "ACME Lda")
    await reception.wait_ringing()
    reception.off_hook()
    await pbx.wait_state("city1", LegState.CONNECTED)
    reception.flash()
    await pbx.wait_state("city1", LegState.HELD)
    reception.on_hook()
    recall = await reception.wait_ringing(timeout=2.0)
    assert line.seized, "the city caller is kept during the recall"
    reception.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    await pbx.wait_state("city1", LegState.CONNECTED)
    await pbx.speech_both_ways(reception, line)
    reception.on_hook()
    await pbx.sim.wait_until(lambda: not line.seized, 3.0, "line released")
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.answered_extension == "201"
    assert recall.caller_number == "212345678", "the recall shows who is waiting on hold"
