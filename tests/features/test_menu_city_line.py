"""A city caller in a two-level menu, keying in-band DTMF on the line's audio.

Key 1 in the main menu opens the sales menu, key 2 there rings 203 (2 also starts the
extension numbers, so it waits the inter-digit time first); dialling 203 during the
greeting goes straight there and the greeting stops at the first digit; no key goes to
the timeout destination; two invalid keys each get "invalid option" and then the invalid
destination. Every check is on what the line hears or which phone rings. An extension
dialling the menu's number keys through it with the card's digit events.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from firmware.calls.cdr import Direction, Disposition
from firmware.calls.lifecycle import LegState
from firmware.media.tones import dtmf_samples
from tests.features.feature_tools import hears_prompt, office_with_routing, prompt_similarity

MENUS = """
[[routing.nodes]]
name = "main"
kind = "menu"
number = "650"
greeting = "office_closed"
keys = { "1" = "sales", "0" = "201" }
inter_digit_s = 0.6
timeout_s = 1.0
timeout_to = "202"
max_invalid = 2
invalid_to = "bye"

[[routing.nodes]]
name = "sales"
kind = "menu"
greeting = "connecting"
keys = { "2" = "203", "*" = "main" }
inter_digit_s = 0.6
timeout_s = 1.0
timeout_to = "bye"
invalid_to = "bye"

[[routing.nodes]]
name = "bye"
kind = "announcement"
prompt = "thank_you_for_calling"
"""

RATE = 8000


@pytest.fixture
def pbx_config() -> str:
    return office_with_routing(MENUS)


async def answered_by_the_menu(pbx, line) -> int:
    """The city calls; returns the audio mark from which the exchange answered."""
    mark = line.mark()
    line.ring("212345678")
    await pbx.sim.wait_until(lambda: line.seized, 5.0, "the menu answers the line")
    return mark


async def test_key_1_then_key_2_reaches_203_through_the_sales_menu(pbx) -> None:
    line, accounts = pbx.line("city1"), pbx.phone("203")
    mark = await answered_by_the_menu(pbx, line)
    assert await hears_prompt(pbx, line, "office_closed", mark)
    line.say(dtmf_samples("1"))
    mark = line.mark()
    assert await hears_prompt(pbx, line, "connecting", mark), "key 1 opens the sales menu"
    line.say(dtmf_samples("2"))
    keyed = asyncio.get_running_loop().time()
    await pbx.wait_state("203", LegState.ALERTING)
    waited = asyncio.get_running_loop().time() - keyed
    # 2 could start 201-208: the menu waits 0.6 s for a second digit before taking the key.
    assert waited >= 0.6, f"203 rang {waited:.2f} s after the key"
    accounts.off_hook()
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.speech_both_ways(line, accounts)
    accounts.on_hook()
    record = await pbx.last_record()
    assert (record.direction, record.disposition) == (Direction.INCOMING, Disposition.ANSWERED)
    assert (record.answered_extension, record.called_extension) == ("203", "203")
    assert (record.destination_kind, record.line) == ("menu", "city1")


async def test_dialling_203_during_the_greeting_rings_it_and_stops_the_greeting(pbx) -> None:
    line, accounts = pbx.line("city1"), pbx.phone("203")
    mark = await answered_by_the_menu(pbx, line)
    assert await hears_prompt(pbx, line, "office_closed", mark)
    mark = line.mark()
    line.say(dtmf_samples("203", on_ms=80, off_ms=200))  # the 3 starts at 560 ms
    await pbx.wait_state("203", LegState.ALERTING)
    assert pbx.channel("202").state == LegState.IDLE
    heard = line.heard(mark)
    # The first digit (detected within ~100 ms) stopped the greeting: nothing until the 3.
    between = heard[int(0.2 * RATE) : int(0.5 * RATE)]
    assert between.size == int(0.3 * RATE)
    assert int(np.max(np.abs(between))) < 50, "the greeting went on after the first digit"
    prompt = pbx.app.mixer.sounds.samples_of("prompt:office_closed")
    assert prompt_similarity(heard[int(0.2 * RATE) :], prompt) < 0.5
    assert await pbx.hears(line, "ringback"), "the caller hears 203 ringing"
    accounts.off_hook()
    await pbx.wait_state("203", LegState.CONNECTED)
    await pbx.speech_both_ways(line, accounts)
    line.hang_up()
    record = await pbx.last_record()
    assert (record.disposition, record.answered_extension) == (Disposition.ANSWERED, "203")
    accounts.on_hook()


async def test_no_key_after_the_greeting_goes_to_the_timeout_destination(pbx) -> None:
    line = pbx.line("city1")
    mark = await answered_by_the_menu(pbx, line)
    assert await hears_prompt(pbx, line, "office_closed", mark)
    await pbx.wait_state("202", LegState.ALERTING, timeout=8.0)
    assert pbx.channel("203").state == LegState.IDLE
    line.hang_up()
    record = await pbx.last_record()
    assert record.called_extension == "202"
    assert record.answered_extension is None


async def test_invalid_keys_get_the_invalid_prompt_then_the_invalid_destination(pbx) -> None:
    line = pbx.line("city1")
    mark = await answered_by_the_menu(pbx, line)
    assert await hears_prompt(pbx, line, "office_closed", mark)
    for attempt in range(2):
        mark = line.mark()
        line.say(dtmf_samples("5"))  # not a key, and no number starts with 5
        assert await hears_prompt(pbx, line, "invalid_option", mark), f"invalid #{attempt + 1}"
        if attempt == 0:
            assert await hears_prompt(pbx, line, "office_closed", mark, timeout=6.0), "replayed"
    mark = line.mark()
    assert await hears_prompt(pbx, line, "thank_you_for_calling", mark, timeout=6.0)
    await pbx.sim.wait_until(lambda: not line.seized, 8.0, "line released after goodbye")
    assert all(pbx.channel(n).state == LegState.IDLE for n in ("201", "202", "203"))
    record = await pbx.last_record()
    assert record.cause == "announcement:thank_you_for_calling"
    assert record.answered_extension is None


async def test_an_extension_dials_the_menu_by_its_number_and_keys_on_the_phone(pbx) -> None:
    caller, accounts = pbx.phone("204"), pbx.phone("203")
    caller.off_hook()
    await pbx.wait_state("204", LegState.DIALLING)
    mark = caller.mark()
    await caller.dial("650")
    assert await hears_prompt(pbx, caller, "office_closed", mark)
    mark = caller.mark()
    await caller.dial("1")  # the card's digit events, not audio
    assert await hears_prompt(pbx, caller, "connecting", mark)
    await caller.dial("2")
    await pbx.wait_state("203", LegState.ALERTING)
    accounts.off_hook()
    await pbx.wait_state("204", LegState.CONNECTED)
    await pbx.speech_both_ways(caller, accounts)
    caller.on_hook()
    record = await pbx.last_record()
    assert (record.caller_number, record.dialled) == ("204", "650")
    assert (record.disposition, record.answered_extension) == (Disposition.ANSWERED, "203")
    accounts.on_hook()
