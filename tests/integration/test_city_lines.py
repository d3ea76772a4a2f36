"""City lines (FXO): calls from and to the public network, as office users and callers live them.

The simulator's `SimCityLine` plays the telephone exchange: it rings the office with a
caller ID, gives dial tone when a line is seized, takes the digits, answers, and hangs up by
loop-current drop, polarity reversal or busy tone. Audio on a city line is checked like on
a phone: `say()` sends towards the office, `heard()` is what the office sent to the line.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from firmware.lines.protocol import HookSet
from tests.conftest import FAST_TIMERS, office_config

# ----- helpers ------------------------------------------------------------------------------


TIMERS = FAST_TIMERS.replace("lockout_tone_s = 1.0", "lockout_tone_s = 4.0")
assert TIMERS != FAST_TIMERS


@pytest.fixture
def pbx_config() -> str:
    return office_config(timers=TIMERS)


def with_line(name: str, extra_keys: str) -> str:
    """The office config with keys added to city line `name`."""
    text = office_config(timers=TIMERS)
    anchor = f'name = "{name}"\n'
    assert text.count(anchor) == 1
    return text.replace(anchor, anchor + extra_keys.strip() + "\n")


def seizures(pbx, port: int) -> list[HookSet]:
    return [m for m in pbx.sim.received if isinstance(m, HookSet) and m.port == port and m.off_hook]


async def wait_released(pbx, line, timeout: float = 3.0) -> None:
    await pbx.sim.wait_until(lambda: not line.seized, timeout, f"line {line.port} released")


async def call_out(pbx, extension: str, digits: str) -> None:
    """Lift `extension`, dial `digits`, until it talks to the far end over a line."""
    phone = pbx.phone(extension)
    phone.off_hook()
    await pbx.wait_state(extension, LegState.DIALLING)
    await phone.dial(digits)
    await pbx.wait_state(extension, LegState.CONNECTED)


POLARITY_ANSWER = with_line("city1", 'answer_supervision = "polarity"')
NO_DIAL_TONE_WAIT = with_line("city1", "wait_for_dial_tone = false")


# ----- incoming -----------------------------------------------------------------------------


async def test_incoming_call_rings_the_reception_showing_the_caller_and_connects(pbx) -> None:
    line, reception = pbx.line("city1"), pbx.phone("201")
    line.ring("212345678", "ACME Lda")
    ringing = await reception.wait_ringing()
    assert (ringing.caller_number, ringing.caller_name) == ("212345678", "ACME Lda")
    assert pbx.phone("202").ringing is None, "city1 rings the reception only"
    assert not line.seized, "the line is not answered before someone lifts"
    reception.off_hook()
    await pbx.sim.wait_until(lambda: line.seized, 2.0, "line seized on answer")
    await pbx.wait_state("201", LegState.CONNECTED)
    await pbx.wait_state("city1", LegState.CONNECTED)
    await pbx.speech_both_ways(line, reception)
    reception.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.direction == Direction.INCOMING
    assert record.disposition == Disposition.ANSWERED
    assert (record.caller_number, record.caller_name) == ("212345678", "ACME Lda")
    assert (record.line, record.line_group) == ("city1", "city")
    assert (record.called_extension, record.answered_extension) == ("201", "201")
    assert record.billable_s > 0
    assert pbx.channel("city1").state == LegState.IDLE


async def test_city_caller_giving_up_stops_the_ringing_and_records_an_unanswered_call(pbx) -> None:
    line, reception = pbx.line("city1"), pbx.phone("201")
    line.ring("212345678", "ACME Lda")
    await reception.wait_ringing()
    line.hang_up()
    await reception.wait_not_ringing(timeout=7.0)  # fxo_ring_gone_s = 5.5
    record = await pbx.last_record()
    assert record.direction == Direction.INCOMING
    assert record.disposition == Disposition.ABANDONED
    assert record.answer is None and record.answered_extension is None
    assert record.caller_number == "212345678"
    assert record.line == "city1"
    assert seizures(pbx, line.port) == [], "an unanswered call never seizes the line"
    assert pbx.channel("201").state == LegState.IDLE


async def test_a_line_with_two_destinations_rings_both_and_the_first_to_answer_gets_it(pbx) -> None:
    line = pbx.line("city2")
    reception, sales = pbx.phone("201"), pbx.phone("202")
    line.ring("912345678", "Customer")
    first = await reception.wait_ringing()
    second = await sales.wait_ringing()
    assert first.caller_number == second.caller_number == "912345678"
    sales.off_hook()
    await reception.wait_not_ringing(timeout=2.0)
    await pbx.wait_state("202", LegState.CONNECTED)
    assert pbx.channel("201").state == LegState.IDLE
    assert line.seized
    await pbx.speech_both_ways(line, sales)
    # The reception is free again for other calls while sales talks.
    assert pbx.channel("201").state == LegState.IDLE
    mark = sales.mark()
    line.hang_up("loop_current")
    await wait_released(pbx, line)
    assert await pbx.hears_cadence(sales, "busy", since=mark)
    sales.on_hook()
    record = await pbx.last_record()
    assert record.direction == Direction.INCOMING
    assert record.disposition == Disposition.ANSWERED
    assert record.answered_extension == "202"
    assert record.line == "city2"
    assert record.hangup_side == HangupSide.CALLER


async def test_incoming_call_with_every_destination_busy_is_recorded_busy(pbx) -> None:
    reception, accounts = pbx.phone("201"), pbx.phone("203")
    reception.off_hook()
    await pbx.wait_state("201", LegState.DIALLING)
    await reception.dial("203")
    await accounts.wait_ringing()
    accounts.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    line = pbx.line("city1")
    line.ring("212345678", "ACME Lda")
    await pbx.wait_state("city1", LegState.ALERTING)
    await asyncio.sleep(1.5)  # past the first ring, when the caller ID is sent
    assert not line.seized, "nobody is free: the line is left ringing, never answered"
    line.hang_up()  # the city caller stops trying
    await pbx.sim.wait_until(
        lambda: len(pbx.app.calls.sessions) == 1, 10.0, "the unanswerable call is given up"
    )
    assert not line.seized
    await pbx.speech_both_ways(reception, accounts)  # the call in progress is not disturbed
    reception.on_hook()
    accounts.on_hook()
    await pbx.wait_idle()
    records = {r.direction: r for r in await pbx.records()}
    incoming = records[Direction.INCOMING]
    assert incoming.disposition == Disposition.BUSY
    assert incoming.caller_number == "212345678"
    assert incoming.line == "city1"
    assert records[Direction.INTERNAL].disposition == Disposition.ANSWERED
    assert seizures(pbx, line.port) == []


# ----- outgoing -----------------------------------------------------------------------------


async def test_outgoing_local_call_seizes_a_line_dials_without_access_code_and_talks(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await sales.dial("9212345678")
    await pbx.sim.wait_until(lambda: line.seized, 2.0, "line seized")
    await pbx.sim.wait_until(lambda: line.calls_dialled, 3.0, "number dialled on the line")
    assert line.calls_dialled == ["212345678"]
    await pbx.wait_state("202", LegState.CONNECTED)
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    await pbx.speech_both_ways(sales, line)
    sales.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.direction == Direction.OUTGOING
    assert record.disposition == Disposition.ANSWERED
    assert (record.caller_number, record.dialled) == ("202", "9212345678")
    assert (record.line, record.line_group) == ("city1", "city")
    assert record.destination_kind == "local"
    assert record.hangup_side == HangupSide.CALLER
    assert pbx.channel("city1").state == LegState.IDLE


@pytest.mark.parametrize("method", ["loop_current", "polarity", "tone"])
async def test_far_end_hanging_up_releases_the_line_and_the_caller_hears_busy(pbx, method) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    await call_out(pbx, "202", "9212345678")
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    line.hang_up(method)
    await wait_released(pbx, line, timeout=5.0)  # a busy tone takes two cadence cycles to recognise
    await pbx.wait_state("city1", LegState.IDLE)
    mark = sales.mark()
    assert await pbx.hears_cadence(sales, "busy", since=mark)
    assert pbx.channel("202").state == LegState.CLEARING
    sales.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.hangup_side == HangupSide.CALLEE
    assert record.cause == method


@pytest.mark.parametrize("pbx_config", [POLARITY_ANSWER], ids=["polarity-answer"])
async def test_billing_starts_at_the_polarity_reversal_when_the_far_end_answers(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    line.behaviour.reverse_polarity_on_answer = True
    line.behaviour.answer_delay_s = 0.8
    await call_out(pbx, "202", "9212345678")
    await pbx.sim.wait_until(lambda: line.calls_dialled, 2.0, "number dialled")
    (call,) = pbx.app.calls.calls_summary()
    assert not call["answered"], "not billable while the far end is still ringing"
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    reversed_at = datetime.now(UTC)
    await pbx.sim.wait_until(
        lambda: pbx.app.calls.calls_summary()[0]["answered"], 1.0, "answer seen by the core"
    )
    assert line.seized, "the answer reversal is not taken for a hang-up"
    await pbx.speech_both_ways(sales, line)
    sales.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.answer is not None
    assert abs((record.answer - reversed_at).total_seconds()) < 0.2
    assert (record.answer - record.start).total_seconds() > 0.7
    assert record.billable_s < record.duration_s - 0.7


@pytest.mark.parametrize("pbx_config", [POLARITY_ANSWER], ids=["polarity-answer"])
async def test_caller_giving_up_before_the_polarity_answer_is_not_billed(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    line.behaviour.reverse_polarity_on_answer = True
    line.behaviour.answer = "no_answer"
    await call_out(pbx, "202", "9212345678")
    await pbx.sim.wait_until(lambda: line.calls_dialled, 2.0, "number dialled")
    sales.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.answer is None and record.billable_s == 0
    # docs/architecture.md: "a call never answered that way ends as `no_answer`".
    assert record.disposition == Disposition.NO_ANSWER
    assert record.hangup_side == HangupSide.CALLER


async def test_no_free_line_gives_congestion_and_a_congestion_record(pbx) -> None:
    await call_out(pbx, "201", "9212345678")
    await call_out(pbx, "203", "9212345679")
    city1, city2 = pbx.line("city1"), pbx.line("city2")
    assert city1.seized and city2.seized
    sales = pbx.phone("202")
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    mark = sales.mark()
    await sales.dial("9212345670")
    assert await pbx.hears_cadence(sales, "congestion", since=mark)
    await pbx.wait_state("202", LegState.CLEARING)
    sales.on_hook()
    await pbx.wait_state("202", LegState.IDLE)
    for extension in ("201", "203"):
        pbx.phone(extension).on_hook()
    await pbx.wait_idle()
    await wait_released(pbx, city1)
    await wait_released(pbx, city2)
    records = {r.caller_number: r for r in await pbx.records()}
    assert records["202"].disposition == Disposition.CONGESTION
    assert records["202"].direction == Direction.OUTGOING
    assert records["202"].line is None
    assert {c for line in (city1, city2) for c in line.calls_dialled} == {"212345678", "212345679"}


async def test_no_dial_tone_from_the_exchange_gives_congestion_and_releases_the_line(pbx) -> None:
    sales, line, other = pbx.phone("202"), pbx.line("city1"), pbx.line("city2")
    line.behaviour.dial_tone = False
    other.behaviour.dial_tone = False
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await sales.dial("9212345678")
    await pbx.sim.wait_until(lambda: line.seized, 2.0, "line seized")
    mark = sales.mark()
    await wait_released(pbx, line, timeout=3.0)  # fxo_dial_tone_wait_s = 1.5
    await pbx.sim.wait_until(lambda: other.seized, 2.0, "the next line of the group tried")
    await wait_released(pbx, other, timeout=3.0)
    assert await pbx.hears_cadence(sales, "congestion", since=mark)
    assert line.calls_dialled == [] and other.calls_dialled == [], "nothing is dialled into a dead line"
    sales.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.FAILED
    assert record.cause == "no_dial_tone"
    assert record.line == "city2"
    assert pbx.channel("city1").state == LegState.IDLE
    assert pbx.channel("city2").state == LegState.IDLE


async def test_a_line_without_dial_tone_is_skipped_for_the_next_line_of_the_group(pbx) -> None:
    """Line hunting: a dead city line must not stop outgoing calls while another works."""
    sales, dead, good = pbx.phone("202"), pbx.line("city1"), pbx.line("city2")
    dead.behaviour.dial_tone = False
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await sales.dial("9212345678")
    await pbx.sim.wait_until(lambda: good.calls_dialled == ["212345678"], 6.0, "dialled on city2")
    assert dead.calls_dialled == [] and not dead.seized
    sales.on_hook()
    record = await pbx.last_record()
    assert record.line == "city2" and record.dialled == "9212345678"


@pytest.mark.parametrize("pbx_config", [NO_DIAL_TONE_WAIT], ids=["blind-dialling"])
async def test_a_line_set_not_to_wait_for_dial_tone_still_dials(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    line.behaviour.dial_tone = False
    await call_out(pbx, "202", "9212345678")
    assert line.calls_dialled == ["212345678"]
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    await pbx.speech_both_ways(sales, line)
    sales.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.line == "city1"


@pytest.mark.parametrize("digits", ["112", "9112"])
async def test_emergency_number_goes_out_from_the_lobby_phone(pbx, digits) -> None:
    lobby, line = pbx.phone("208"), pbx.line("city1")
    assert pbx.app.config.classes_of_service["lobby"].line_groups == ()
    await call_out(pbx, "208", digits)
    assert line.calls_dialled == ["112"]
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    await pbx.speech_both_ways(lobby, line)
    lobby.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.direction == Direction.OUTGOING
    assert record.disposition == Disposition.ANSWERED
    assert record.destination_kind == "emergency"
    assert (record.caller_number, record.dialled, record.line) == ("208", digits, "city1")


async def test_caller_hanging_up_while_the_line_waits_for_dial_tone_releases_it(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    line.behaviour.dial_tone = False
    sales.off_hook()
    await pbx.wait_state("202", LegState.DIALLING)
    await sales.dial("9212345678")
    await pbx.sim.wait_until(lambda: line.seized, 2.0, "line seized")
    sales.on_hook()
    await wait_released(pbx, line, timeout=1.0)  # at once, not after fxo_dial_tone_wait_s
    record = await pbx.last_record()
    assert record.disposition == Disposition.ABANDONED
    assert record.hangup_side == HangupSide.CALLER
    assert record.line == "city1"
    assert line.calls_dialled == []
    assert pbx.channel("city1").state == LegState.IDLE


@pytest.mark.parametrize("pbx_config", [POLARITY_ANSWER], ids=["polarity-answer"])
async def test_after_a_polarity_answer_the_next_reversal_is_the_far_end_hanging_up(pbx) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    line.behaviour.reverse_polarity_on_answer = True
    await call_out(pbx, "202", "9212345678")
    await pbx.sim.wait_until(
        lambda: pbx.app.calls.calls_summary()[0]["answered"], 2.0, "answer seen by the core"
    )
    line.hang_up("polarity")
    await wait_released(pbx, line)
    assert await pbx.hears_cadence(sales, "busy")
    sales.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.hangup_side == HangupSide.CALLEE
    assert record.cause == "polarity"


async def test_caller_id_sent_before_the_first_ring_is_shown(pbx) -> None:
    """Some exchanges (e.g. BT in the UK, ETSI EN 300 659 with DT-AS) send it before ringing."""
    line, reception = pbx.line("city1"), pbx.phone("201")
    line.ring("212345678", "ACME Lda", cid_after_first_ring=False)
    ringing = await reception.wait_ringing()
    assert (ringing.caller_number, ringing.caller_name) == ("212345678", "ACME Lda")
    reception.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    reception.on_hook()
    await wait_released(pbx, line)
    record = await pbx.last_record()
    assert record.caller_number == "212345678"


@pytest.mark.parametrize("method", ["loop_current", "polarity", "tone"])
async def test_city_caller_hanging_up_while_on_hold_ends_the_call(pbx, method) -> None:
    sales, line = pbx.phone("202"), pbx.line("city1")
    await call_out(pbx, "202", "9212345678")
    await pbx.sim.wait_until(lambda: line.call is not None and line.call.answered, 2.0, "answer")
    sales.flash()
    await pbx.wait_state("city1", LegState.HELD)
    line.hang_up(method)
    await wait_released(pbx, line, timeout=4.0)
    assert await pbx.hears_cadence(sales, "busy")
    sales.on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.cause == "held_party_cleared"
