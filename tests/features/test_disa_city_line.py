"""DISA from a city line: a PIN, dial tone, and an outside call as that user may make it.

A good PIN then 9 212345678 goes out on city2 (city1 carries the caller); a user whose
class of service has no outside lines is refused; wrong PINs end the call after two, and
lock the caller's number out after three across calls, also after a restart (and even
with the right PIN then). No PIN ever appears in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from firmware.media.tones import dtmf_samples
from tests.conftest import Pbx, start_pbx
from tests.features.feature_tools import hears_prompt, office_with_routing, prompt_similarity

GOOD_PIN = "583920"
LOBBY_PIN = "771104"
WRONG_PINS = ("161803", "314159", "271828")

DISA = f"""
[[routing.nodes]]
name = "outside"
kind = "disa"
users = [
    {{ name = "alice", pin = "{GOOD_PIN}", class_of_service = "staff" }},
    {{ name = "visitor", pin = "{LOBBY_PIN}", class_of_service = "lobby" }},
]
pin_timeout_s = 3.0
max_failures = 2
lockout_failures = 3
"""


@pytest.fixture
def pbx_config() -> str:
    return office_with_routing(DISA, city1='["outside"]')


async def key_pin(pbx: Pbx, line, pin: str, since: int) -> None:
    """Wait for "please enter your PIN", then key `pin` as in-band DTMF."""
    assert await hears_prompt(pbx, line, "enter_pin", since), "asked for the PIN"
    line.say(dtmf_samples(pin))


async def answered(pbx: Pbx, line) -> int:
    mark = line.mark()
    line.ring("212345678")
    await pbx.sim.wait_until(lambda: line.seized, 5.0, "DISA answers the line")
    return mark


async def test_a_good_pin_then_an_allowed_number_goes_out_on_the_other_line(pbx, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    line, out = pbx.line("city1"), pbx.line("city2")
    mark = await answered(pbx, line)
    await key_pin(pbx, line, GOOD_PIN, mark)
    mark = line.mark()
    assert await pbx.hears(line, "dial", since=mark, timeout=4.0), "dial tone after the PIN"
    line.say(dtmf_samples("9212345678"))
    await pbx.sim.wait_until(lambda: out.calls_dialled == ["212345678"], 6.0, "city2 dialled")
    await pbx.wait_state("city2", LegState.CONNECTED)
    await pbx.sim.wait_until(lambda: out.call is not None and out.call.answered, 3.0, "answer")
    await pbx.speech_both_ways(line, out)
    line.hang_up()
    record = await pbx.last_record()
    assert (record.direction, record.disposition) == (Direction.OUTGOING, Disposition.ANSWERED)
    assert (record.line, record.external_number) == ("city2", "212345678")
    assert (record.caller_number, record.destination_kind) == ("212345678", "local")
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "event=disa_pin_ok" in m and "source=212345678" in m and "user=alice" in m for m in messages
    ), messages
    assert GOOD_PIN not in caplog.text


async def test_a_number_outside_the_users_class_is_refused(pbx) -> None:
    line, out = pbx.line("city1"), pbx.line("city2")
    mark = await answered(pbx, line)
    await key_pin(pbx, line, LOBBY_PIN, mark)
    mark = line.mark()
    assert await pbx.hears(line, "dial", since=mark, timeout=4.0)
    line.say(dtmf_samples("9212345678"))
    assert await pbx.hears(line, "special_information", since=mark, timeout=5.0)
    await pbx.sim.wait_until(lambda: not line.seized, 5.0, "the caller's line released")
    assert out.calls_dialled == [] and not out.seized
    record = await pbx.last_record()
    # Answered by the exchange (the PIN prompt), refused by the class of service.
    assert (record.disposition, record.cause) == (Disposition.ANSWERED, "cos:line_group:city")
    assert record.external_number == "212345678"


async def wrong_pins_call(pbx: Pbx, pins: tuple[str, ...], ending: str) -> None:
    """One city call keying `pins`; it must end with the prompt `ending` and a release."""
    line = pbx.line("city1")
    mark = await answered(pbx, line)
    for pin in pins:
        await key_pin(pbx, line, pin, mark)
        mark = line.mark()
        if ending == "pin_locked" and pin == pins[-1]:
            break
        assert await hears_prompt(pbx, line, "pin_wrong", mark)
    assert await hears_prompt(pbx, line, ending, mark, timeout=6.0), f"{ending} at the end"
    await pbx.sim.wait_until(lambda: not line.seized, 6.0, "line released")
    await pbx.wait_idle()


async def locked_call(pbx: Pbx, caplog) -> None:
    """A call from the locked number: "locked" at once, no PIN asked, even the right one."""
    line = pbx.line("city1")
    first = len(caplog.records)
    mark = await answered(pbx, line)
    line.say(dtmf_samples(GOOD_PIN))
    assert await hears_prompt(pbx, line, "pin_locked", mark, timeout=5.0)
    await pbx.sim.wait_until(lambda: not line.seized, 6.0, "line released")
    heard = line.heard(mark)
    enter_pin = pbx.app.mixer.sounds.samples_of("prompt:enter_pin")
    assert prompt_similarity(heard, enter_pin) < 0.5, "a locked-out caller is not asked for a PIN"
    messages = [r.getMessage() for r in caplog.records[first:]]
    assert any("event=disa_locked" in m and "source=212345678" in m for m in messages)
    assert not any("event=disa_pin_ok" in m for m in messages)
    record = await pbx.last_record()
    assert record.cause == "disa_locked"
    assert pbx.line("city2").calls_dialled == []


async def test_wrong_pins_lock_the_caller_out_across_calls_and_restarts(
    data_dir: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    config = office_with_routing(DISA, city1='["outside"]')
    pbx = await start_pbx(config, data_dir)
    try:
        await wrong_pins_call(pbx, WRONG_PINS[:2], "goodbye")  # max_failures = 2 per call
        record = await pbx.last_record()
        assert record.cause == "disa_pin_failed"
        wrong = [m for m in caplog.messages if "event=disa_pin_wrong" in m]
        assert len(wrong) == 2, wrong
        assert "source=212345678" in wrong[0] and "in_call=1 in_window=1" in wrong[0]
        assert "in_call=2 in_window=2" in wrong[1]
        await wrong_pins_call(pbx, WRONG_PINS[2:], "pin_locked")  # the third in the window
        await locked_call(pbx, caplog)
    finally:
        await pbx.app.stop()
    pbx = await start_pbx(config, data_dir)
    try:
        await locked_call(pbx, caplog)
    finally:
        await pbx.app.stop()
    assert all(pin not in caplog.text for pin in (GOOD_PIN, *WRONG_PINS)), "a PIN in the log"


async def test_a_broken_lockout_store_gives_no_access(pbx, data_dir: Path, caplog) -> None:
    (data_dir / "disa.sqlite3").mkdir()  # SQLite cannot open a folder
    line = pbx.line("city1")
    mark = await answered(pbx, line)
    line.say(dtmf_samples(GOOD_PIN))
    assert await hears_prompt(pbx, line, "goodbye", mark, timeout=5.0)
    await pbx.sim.wait_until(lambda: not line.seized, 5.0, "line released")
    enter_pin = pbx.app.mixer.sounds.samples_of("prompt:enter_pin")
    assert prompt_similarity(line.heard(mark), enter_pin) < 0.5, "no PIN asked for"
    record = await pbx.last_record()
    assert record.cause == "disa_store_failed"
    assert any("event=disa_store_failed" in m and "op=locked_until" in m for m in caplog.messages)
    assert pbx.line("city2").calls_dialled == []
