"""A line card that garbles bytes, loses its cable or is not the card the config describes.

Faults are injected in the simulated card (`inject_raw`, `unplug`, `plug`); the appliance
must count them, keep or cleanly end the calls they hit, write records, and come back by
itself, with every phone hearing what a person would expect afterwards.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from firmware.app import Appliance
from firmware.calls.cdr import Direction, Disposition, HangupSide
from firmware.calls.lifecycle import LegState
from firmware.config.load import parse_config
from firmware.lines import simulator as sim_module
from firmware.lines.audio import MemoryAudio
from firmware.lines.protocol import Hook, crc16, encode_frame, stuff
from firmware.media.tones import TonePlan
from firmware.selftest import test_tone as make_tone
from tests.conftest import Pbx, office_config

FAST_LINK = """[line_card]
url = "sim"
audio = "memory"
fxs_ports = 8
fxo_ports = 2
heartbeat_s = 0.3
link_timeout_s = 1.0
"""
LINK_TIMEOUT_S = 1.0


def with_line_card(section: str, text: str | None = None) -> str:
    """The test office with its whole [line_card] section replaced by `section`."""
    text = office_config() if text is None else text
    start = text.index("[line_card]")
    end = text.index("\n[", start + 1) + 1
    return text[:start] + section.strip() + "\n\n" + text[end:]


@pytest.fixture
def pbx_config() -> str:
    return with_line_card(FAST_LINK)


# ----- helpers ---------------------------------------------------------------------------


def counters(pbx: Pbx) -> dict[str, int]:
    assert pbx.app.line_card is not None
    return dict(pbx.app.line_card.driver.counters)


def frame_with_body(body: bytes, crc: int | None = None) -> bytes:
    crc = crc16(body) if crc is None else crc
    return b"\x7e" + stuff(body + crc.to_bytes(2, "big")) + b"\x7e"


async def connect(pbx: Pbx, caller: str, callee: str) -> None:
    a, b = pbx.phone(caller), pbx.phone(callee)
    a.off_hook()
    assert await pbx.hears(a, "dial")
    await a.dial(callee)
    await b.wait_ringing()
    b.off_hook()
    await pbx.wait_state(caller, LegState.CONNECTED)
    await pbx.wait_state(callee, LegState.CONNECTED)


async def speech_both_ways(pbx: Pbx, caller: str, callee: str) -> None:
    a, b = pbx.phone(caller), pbx.phone(callee)
    mark = b.mark()
    a.say(make_tone(1004))
    assert await pbx.hears(b, (1004.0,), since=mark), f"{caller} -> {callee} speech path"
    mark = a.mark()
    b.say(make_tone(1400))
    assert await pbx.hears(a, (1400.0,), since=mark), f"{callee} -> {caller} speech path"


async def full_call(pbx: Pbx, caller: str, callee: str) -> None:
    """A whole answered call with speech both ways, ending idle with an answered record."""
    await connect(pbx, caller, callee)
    await speech_both_ways(pbx, caller, callee)
    pbx.phone(caller).on_hook()
    pbx.phone(callee).on_hook()
    record = await pbx.last_record()
    assert (record.caller_number, record.answered_extension) == (caller, callee)
    assert record.disposition == Disposition.ANSWERED
    await pbx.wait_state(caller, LegState.IDLE)
    await pbx.wait_state(callee, LegState.IDLE)


def all_ports(pbx: Pbx) -> dict[int, LegState]:
    assert pbx.app.line_card is not None
    return {port: channel.state for port, channel in pbx.app.line_card.channels.items()}


async def wait_all_ports(pbx: Pbx, state: LegState, timeout: float) -> None:
    await pbx.sim.wait_until(
        lambda: all(s == state for s in all_ports(pbx).values()),
        timeout,
        f"every port {state} (are {all_ports(pbx)})",
    )


async def wait_counter(pbx: Pbx, name: str, above: int, timeout: float = 2.0) -> None:
    await pbx.sim.wait_until(
        lambda: counters(pbx)[name] > above, timeout, f"driver counter {name} > {above}"
    )


# ----- garbled bytes ---------------------------------------------------------------------


async def test_random_garbage_on_the_link_is_counted_and_calls_still_work(pbx) -> None:
    before = counters(pbx)
    garbage = random.Random(7).randbytes(600)
    for start in range(0, len(garbage), 100):
        pbx.sim.inject_raw(garbage[start : start + 100])
        await asyncio.sleep(0.02)
    await wait_counter(pbx, "garbage_bytes", before["garbage_bytes"] + 100)
    assert pbx.app.line_card.driver.status == "up"
    assert all(s == LegState.IDLE for s in all_ports(pbx).values())
    await full_call(pbx, "202", "203")


async def test_frame_with_a_bad_crc_is_counted_and_not_acted_on(pbx) -> None:
    before = counters(pbx)
    body = bytes((0x81, 0, 77)) + Hook(port=5, off_hook=True).encode_payload()
    pbx.sim.inject_raw(frame_with_body(body, crc=crc16(body) ^ 0x5A5A))
    await wait_counter(pbx, "bad_crc", before["bad_crc"])
    await asyncio.sleep(0.1)
    assert pbx.channel("205").state == LegState.IDLE, "a corrupted HOOK must not lift 205"
    assert not pbx.app.calls.is_off_hook(pbx.channel("205"))
    await full_call(pbx, "205", "206")


async def test_truncated_frames_are_counted_and_the_next_frame_is_understood(pbx) -> None:
    before = counters(pbx)
    whole = encode_frame(Hook(port=4, off_hook=True), 91)
    pbx.sim.inject_raw(whole[:3])  # flag + 2 bytes: too short once the next flag comes
    pbx.sim.inject_raw(b"\x7e" + whole[1:-3] + b"\x7e")  # a body that lost its tail: bad CRC
    await pbx.sim.wait_until(
        lambda: (
            counters(pbx)["too_short"] + counters(pbx)["bad_crc"]
            >= before["too_short"] + before["bad_crc"] + 2
        ),
        2,
        "truncated frames counted",
    )
    assert pbx.channel("204").state == LegState.IDLE
    # The real traffic right after the damage is understood.
    await full_call(pbx, "204", "202")


async def test_frame_of_unknown_type_between_real_traffic_is_counted_and_skipped(pbx) -> None:
    before = counters(pbx)
    a = pbx.phone("202")
    a.off_hook()
    pbx.sim.inject_raw(frame_with_body(bytes((0x9A, 0, 3)) + b"\x01\x02\x03"))
    assert await pbx.hears(a, "dial")
    await wait_counter(pbx, "unknown_type", before["unknown_type"])
    await a.dial("20")
    pbx.sim.inject_raw(frame_with_body(bytes((0x9A, 0, 4))))
    await a.dial("3")
    b = pbx.phone("203")
    await b.wait_ringing()
    b.off_hook()
    await pbx.wait_state("202", LegState.CONNECTED)
    await speech_both_ways(pbx, "202", "203")
    a.on_hook()
    b.on_hook()
    record = await pbx.last_record()
    assert (record.dialled, record.disposition) == ("203", Disposition.ANSWERED)
    assert counters(pbx)["unknown_type"] >= before["unknown_type"] + 2


async def test_call_in_progress_survives_every_kind_of_garbled_frame(pbx) -> None:
    await connect(pbx, "202", "203")
    before = counters(pbx)
    rng = random.Random(11)
    whole = encode_frame(Hook(port=2, off_hook=False), 150)  # an ON_HOOK for 202, if understood
    bad_crc = frame_with_body(whole[1:-3], crc=0xBEEF)
    for _ in range(5):
        pbx.sim.inject_raw(rng.randbytes(80))
        pbx.sim.inject_raw(whole[:-4] + b"\x7e")  # truncated
        pbx.sim.inject_raw(bad_crc)
        pbx.sim.inject_raw(frame_with_body(bytes((0xEE, 0, 9)) + b"xyz"))  # unknown type
        pbx.sim.inject_raw(b"\x7e" + b"\x55" * 300 + b"\x7e")  # too long
        await asyncio.sleep(0.05)
    await wait_counter(pbx, "unknown_type", before["unknown_type"] + 4)
    after = counters(pbx)
    assert after["bad_crc"] > before["bad_crc"]
    assert after["too_long"] > before["too_long"]
    assert after["garbage_bytes"] > before["garbage_bytes"]
    assert pbx.app.line_card.driver.status == "up"
    assert pbx.channel("202").state == LegState.CONNECTED
    assert pbx.channel("203").state == LegState.CONNECTED
    await speech_both_ways(pbx, "202", "203")
    pbx.phone("203").on_hook()
    pbx.phone("202").on_hook()
    record = await pbx.last_record()
    assert record.disposition == Disposition.ANSWERED
    assert record.hangup_side == HangupSide.CALLEE
    assert record.cause == "normal_clearing"


# ----- link loss -------------------------------------------------------------------------


async def test_unplugged_card_ends_the_call_with_a_record_and_shows_link_down(pbx) -> None:
    await connect(pbx, "202", "203")
    pbx.sim.unplug()
    await pbx.wait_state("202", LegState.OUT_OF_SERVICE, timeout=LINK_TIMEOUT_S + 1.0)
    await pbx.wait_idle(timeout=2)
    status = pbx.app.status()
    assert status["line_card"]["link"] != "up"
    assert status["line_card"]["counters"]["link_losses"] == 1
    assert status["calls"] == []
    idle_ports = {p: s for p, s in all_ports(pbx).items() if p not in (2, 3)}
    assert all(s == LegState.OUT_OF_SERVICE for s in idle_ports.values()), idle_ports
    record = await pbx.last_record()
    assert (record.caller_number, record.dialled) == ("202", "203")
    assert record.cause == "out_of_service"
    assert record.hangup_side == HangupSide.SYSTEM
    # An answered call stays answered (session.RecordDraft.ended: first conclusion wins);
    # the cause says it was cut by the card.
    assert record.disposition == Disposition.ANSWERED
    assert pbx.app.mixer.slots_in_use <= 1  # at most the leg wrongly left in CLEARING (bug below)
    pbx.phone("202").on_hook()
    pbx.phone("203").on_hook()
    pbx.sim.plug()
    await pbx.sim.wait_until(lambda: pbx.app.line_card.driver.status == "up", 5, "link up")


async def test_unplug_while_a_phone_rings_gives_a_failed_record_and_no_stuck_bell(pbx) -> None:
    a, b = pbx.phone("202"), pbx.phone("203")
    a.off_hook()
    await a.dial("203")
    await b.wait_ringing()
    pbx.sim.unplug()
    assert b.ringing is None, "the card's safe state stops ringing"
    await pbx.wait_idle(timeout=LINK_TIMEOUT_S + 1.0)
    record = await pbx.last_record()
    assert (record.dialled, record.disposition) == ("203", Disposition.FAILED)
    assert record.cause == "out_of_service"
    assert record.answer is None and record.billable_s == 0
    a.on_hook()
    pbx.sim.plug()
    await wait_all_ports(pbx, LegState.IDLE, timeout=5)
    await asyncio.sleep(0.3)
    assert b.ringing is None, "203 must not start ringing again for a call that is over"
    await full_call(pbx, "203", "202")


async def test_link_loss_puts_both_legs_of_a_call_out_of_service(pbx) -> None:
    await connect(pbx, "202", "203")
    pbx.sim.unplug()
    try:
        await wait_all_ports(pbx, LegState.OUT_OF_SERVICE, LINK_TIMEOUT_S + 1.0)
        assert pbx.app.mixer.slots_in_use == 0
    finally:
        pbx.phone("202").on_hook()
        pbx.phone("203").on_hook()
        pbx.sim.plug()
        await pbx.sim.wait_until(lambda: pbx.app.line_card.driver.status == "up", 5, "link up")


async def test_link_loss_puts_the_city_line_of_a_call_out_of_service(pbx) -> None:
    phone = pbx.phone("202")
    phone.off_hook()
    await phone.dial("9212345678")
    await pbx.wait_state("202", LegState.CONNECTED, timeout=5)
    pbx.sim.unplug()
    try:
        await pbx.wait_idle(timeout=LINK_TIMEOUT_S + 1.0)
        await wait_all_ports(pbx, LegState.OUT_OF_SERVICE, 1.0)
    finally:
        phone.on_hook()
        pbx.sim.plug()
        await pbx.sim.wait_until(lambda: pbx.app.line_card.driver.status == "up", 5, "link up")


async def test_card_plugged_back_after_a_cut_call_brings_every_port_back_idle(pbx) -> None:
    await connect(pbx, "202", "203")
    pbx.sim.unplug()
    await pbx.wait_idle(timeout=LINK_TIMEOUT_S + 1.0)
    pbx.phone("202").on_hook()  # the users hang up while the card is away
    pbx.phone("203").on_hook()
    pbx.sim.plug()
    await wait_all_ports(pbx, LegState.IDLE, timeout=5)
    await full_call(pbx, "203", "202")


async def test_card_unplugged_while_idle_comes_back_by_itself_and_calls_work(pbx) -> None:
    pbx.sim.unplug()
    await wait_all_ports(pbx, LegState.OUT_OF_SERVICE, LINK_TIMEOUT_S + 1.0)
    assert pbx.app.status()["line_card"]["link"] != "up"
    # While the card is away the phones are dead: lifting one does nothing.
    await asyncio.sleep(0.3)
    pbx.sim.plug()
    await wait_all_ports(pbx, LegState.IDLE, timeout=5)
    status = pbx.app.status()
    assert status["line_card"]["link"] == "up"
    assert status["line_card"]["counters"]["reconnects"] >= 1
    await full_call(pbx, "202", "203")


async def test_phone_off_hook_across_an_unplug_gets_dial_tone_again(pbx) -> None:
    phone = pbx.phone("204")
    phone.off_hook()
    assert await pbx.hears(phone, "dial")
    pbx.sim.unplug()
    await pbx.wait_state("204", LegState.OUT_OF_SERVICE, timeout=LINK_TIMEOUT_S + 1.0)
    await pbx.wait_idle(timeout=2)
    mark = phone.mark()
    pbx.sim.plug()
    await pbx.wait_state("204", LegState.DIALLING, timeout=5)
    assert await pbx.hears(phone, "dial", since=mark), "the card's snapshot re-lifts 204"
    await phone.dial("203")
    callee = pbx.phone("203")
    await callee.wait_ringing()
    callee.off_hook()
    await pbx.wait_state("204", LegState.CONNECTED)
    await speech_both_ways(pbx, "204", "203")
    phone.on_hook()
    callee.on_hook()
    record = await pbx.last_record()
    assert (record.caller_number, record.disposition) == ("204", Disposition.ANSWERED)


async def test_phone_hung_up_while_the_card_was_away_is_idle_afterwards(pbx) -> None:
    phone = pbx.phone("205")
    phone.off_hook()
    assert await pbx.hears(phone, "dial")
    pbx.sim.unplug()
    await pbx.wait_state("205", LegState.OUT_OF_SERVICE, timeout=LINK_TIMEOUT_S + 1.0)
    phone.on_hook()
    pbx.sim.plug()
    await wait_all_ports(pbx, LegState.IDLE, timeout=5)
    await asyncio.sleep(0.2)
    assert pbx.channel("205").state == LegState.IDLE
    assert not pbx.app.calls.sessions
    await full_call(pbx, "203", "205")


async def test_unplug_during_a_city_call_releases_the_line_and_it_works_again(pbx) -> None:
    phone, line = pbx.phone("202"), pbx.line("city1")
    phone.off_hook()
    assert await pbx.hears(phone, "dial")
    await phone.dial("9212345678")
    await pbx.sim.wait_until(lambda: line.calls_dialled, 5, "the city got the number")
    await pbx.wait_state("202", LegState.CONNECTED, timeout=5)
    assert line.seized
    pbx.sim.unplug()
    assert not line.seized, "the card's safe state releases a seized line"
    await pbx.wait_idle(timeout=LINK_TIMEOUT_S + 1.0)
    record = await pbx.last_record()
    assert record.direction == Direction.OUTGOING
    assert (record.line, record.cause) == ("city1", "out_of_service")
    phone.on_hook()
    pbx.sim.plug()
    await pbx.sim.wait_until(lambda: pbx.app.line_card.driver.status == "up", 5, "link up")
    await pbx.wait_state("city1", LegState.IDLE, timeout=3)
    await pbx.wait_state("202", LegState.IDLE, timeout=3)
    # The line is usable again: a city call rings the operator's phone.
    line.ring("912345678", "Customer")
    reception = pbx.phone("201")
    ringing = await reception.wait_ringing()
    assert ringing.caller_number == "912345678"
    reception.off_hook()
    await pbx.wait_state("201", LegState.CONNECTED)
    mark = line.mark()
    reception.say(make_tone(1004))
    assert await pbx.hears(line, (1004.0,), since=mark)
    reception.on_hook()
    record = await pbx.last_record()
    assert (record.direction, record.disposition) == (Direction.INCOMING, Disposition.ANSWERED)
    await pbx.sim.wait_until(lambda: not line.seized, 3, "line released")


# ----- a card that is not the one the config describes -----------------------------------


async def test_card_with_fewer_ports_than_the_config_puts_the_missing_ports_out_of_service(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_card = sim_module.SimulatedLineCard

    def smaller_card(
        fxs_ports: int, fxo_ports: int, audio: MemoryAudio, plan: TonePlan
    ) -> sim_module.SimulatedLineCard:
        return real_card(6, fxo_ports, audio, plan)  # ports 1-6 FXS, 7-8 FXO

    monkeypatch.setattr("firmware.app.SimulatedLineCard", smaller_card)
    app = Appliance(parse_config(with_line_card(FAST_LINK), "<test>"), None, data_dir)
    await app.start(with_api=False)
    pbx = Pbx(app)
    try:
        await pbx.sim.wait_until(
            lambda: (
                app.line_card.driver.status == "up"
                and all(all_ports(pbx)[p] == LegState.IDLE for p in range(1, 7))
            ),
            5,
            "the card up with ports 1-6 in service",
        )
        states = all_ports(pbx)
        assert all(states[p] == LegState.OUT_OF_SERVICE for p in (7, 8, 9, 10)), states
        faults = " | ".join(app.line_card.faults)
        assert "port 7 to be FXS but the card reports FXO" in faults, faults
        assert "port 9 to be FXO but the card has only 8 ports" in faults, faults
        assert app.status()["line_card"]["faults"]
        # The ports that do match still carry calls.
        await full_call(pbx, "202", "203")
        # Calling an extension whose port is missing gives congestion and a record.
        phone = pbx.phone("201")
        phone.off_hook()
        await phone.dial("207")
        assert await pbx.hears(phone, "congestion")
        phone.on_hook()
        record = await pbx.last_record()
        assert (record.dialled, record.disposition) == ("207", Disposition.FAILED)
        assert record.cause == "extension_out_of_service"
    finally:
        await app.stop()
    assert not app.calls.sessions
    assert app.calls.task_count == 0
