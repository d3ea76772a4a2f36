"""What a caller waiting in a queue hears, and when: proven in the caller's own audio.

Nobody answers here (the agents start logged out), so the caller hears the entry
announcement at once, music for `comfort_every_s` (5 s, the schema's minimum), then the
comfort announcement; with positions on, each caller hears its own place in the queue;
a city caller keying the leave digit in-band goes to `leave_to`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from firmware.calls.lifecycle import LegState
from firmware.media.tones import dtmf_samples
from firmware.selftest import test_tone as make_tone
from tests.features.feature_tools import hears_prompt, prompt_similarity
from tests.features.test_queue_helpers import (
    dial_queue,
    prompt_start,
    queue_office,
    queue_service,
    waiting,
)

RATE = 8000


@pytest.fixture
def pbx_config(request) -> str:
    fields = {"agents_start_logged_in": False, **getattr(request, "param", {})}
    return queue_office(**fields)


@pytest.mark.parametrize(
    "pbx_config",
    [{"entry_prompt": "all_operators_busy", "comfort_prompt": "please_hold", "comfort_every_s": 5}],
    indirect=True,
)
async def test_entry_announcement_at_once_then_music_then_comfort_after_five_seconds(pbx) -> None:
    line = pbx.line("city1")
    line.ring("212345678")
    await pbx.sim.wait_until(lambda: line.seized, 4.0, "the queue answers the line")
    mark = line.mark()  # within a poll of the answer: the prompt may have started just before
    dropped = pbx.app.mixer.frames_dropped
    assert await hears_prompt(pbx, line, "please_hold", mark, timeout=10.0)
    await asyncio.sleep(1.0)  # the whole comfort prompt in the capture
    heard = line.heard(mark)
    sounds = pbx.app.mixer.sounds
    entry = sounds.samples_of("prompt:all_operators_busy")
    comfort = sounds.samples_of("prompt:please_hold")
    music = sounds.samples_of("music:default")

    entry_score, entry_start = prompt_start(heard, entry)
    assert entry_score > 0.9
    assert -0.1 * RATE <= entry_start < 0.3 * RATE, (
        f"entry prompt {entry_start / RATE:.2f} s after answer"
    )
    entry_end = entry_start + entry.size
    comfort_score, comfort_start = prompt_start(heard, comfort)
    assert comfort_score > 0.9
    gap = (comfort_start - entry_end) / RATE
    # Counted in captured samples: a mixer running late on a loaded machine drops ticks.
    lost = (pbx.app.mixer.frames_dropped - dropped) * 0.02
    assert 4.95 - lost <= gap <= 5.3, f"music lasted {gap:.2f} s between the announcements"

    between = heard[entry_end + RATE // 4 : comfort_start - RATE // 4]
    level = float(np.sqrt(np.mean(between.astype(np.float64) ** 2)))
    assert level > 300, f"music between the announcements (rms {level:.0f})"
    assert prompt_similarity(heard[entry_end : entry_end + 3 * RATE], music[: 3 * RATE]) > 0.9
    assert prompt_similarity(between, comfort) < 0.6, "no comfort prompt before its time"
    line.hang_up()
    await pbx.wait_idle()


@pytest.mark.parametrize(
    "pbx_config",
    [{"announce_position": True, "leave_key": "1", "leave_to": "206"}],
    indirect=True,
)
async def test_callers_hear_their_position_and_the_leave_key_takes_one_out(pbx) -> None:
    line = pbx.line("city1")
    line.ring("212345678")
    await pbx.sim.wait_until(lambda: line.seized, 4.0, "the queue answers the line")
    line_mark = line.mark()
    second = await dial_queue(pbx, "205")
    second_mark = second.mark()
    assert await hears_prompt(pbx, line, "press_to_leave", line_mark, timeout=6.0)
    assert await hears_prompt(pbx, second, "press_to_leave", second_mark, timeout=6.0)
    await asyncio.sleep(0.6)  # the key named after "press"
    sounds = pbx.app.mixer.sounds
    caller_number = sounds.samples_of("prompt:you_are_caller_number")

    def number_after_position(heard, number: int) -> float:
        _, start = prompt_start(heard, caller_number)
        said = heard[start + caller_number.size : start + caller_number.size + RATE]
        return prompt_similarity(said, sounds.samples_of(f"prompt:number_{number}"), 0.3)

    assert number_after_position(line.heard(line_mark), 1) > 0.9
    assert number_after_position(second.heard(second_mark), 2) > 0.9
    assert number_after_position(second.heard(second_mark), 1) < 0.7

    line.say(dtmf_samples("1"))
    await pbx.wait_state("206", LegState.ALERTING, timeout=3.0)
    pbx.phone("206").off_hook()
    await pbx.wait_state("206", LegState.CONNECTED)
    await pbx.speech_both_ways(line, pbx.phone("206"))
    assert waiting(pbx) == 1
    pbx.phone("206").on_hook()
    second.on_hook()
    await pbx.wait_idle()
    line.hang_up()
    await queue_service(pbx).flush()


def test_prompt_start_finds_a_prompt_at_its_sample() -> None:
    """The timing above rests on prompt_start: a sound pasted into noise is found at its
    sample, and a plain tone is not mistaken for it."""
    rng = np.random.default_rng(5)
    prompt = (np.sin(np.arange(6000) * 0.3) * 8000 * np.hanning(6000)).astype(np.int16)
    prompt[3000:] = (rng.normal(0, 3000, 3000)).astype(np.int16)
    heard = rng.normal(0, 200, 40_000).astype(np.int16)
    heard[12_345 : 12_345 + prompt.size] += prompt
    score, start = prompt_start(heard, prompt)
    assert score > 0.9 and start == 12_345
    assert prompt_start(np.resize(make_tone(1004), 40_000), prompt)[0] < 0.5
