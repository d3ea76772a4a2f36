"""Disconnect supervision on simulated city lines of exchanges the code has never seen:
the learned tone releases the line within 4 cycles, the electrical signs still work, and
silence both ways is the counted last resort."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from firmware.calls.lifecycle import LegState
from firmware.lines.protocol import LoopCurrent, Polarity
from firmware.lines.sim_acoustics import FAMILIES, random_acoustics, random_disconnect_tone
from firmware.media.levels import dbm0_to_peak
from firmware.media.tones import format_tone
from firmware.selftest import test_tone as make_tone
from tests.lines.line_tools import call_out_answered, office_with_city1

LEARNED_US_BUSY = "480+620/500,0/500"


def _learn(pbx, tone: str | None, max_silence_s: float = 0.0) -> None:
    """What `[[lines]]` settings give a line (see the config test below for the real path)."""
    pbx.channel("city1").configure(
        disconnect=("polarity", "loop_current", "tone"),
        answer_supervision="none",
        dial_mode="dtmf",
        disconnect_tone=tone,
        max_silence_s=max_silence_s,
    )


async def _released_after(pbx, timeout: float) -> float:
    line = pbx.line("city1")
    started = time.monotonic()
    await pbx.sim.wait_until(lambda: not line.seized, timeout, "line released")
    return time.monotonic() - started


async def _finish(pbx) -> object:
    pbx.phone("202").on_hook()
    return await pbx.last_record()


@pytest.mark.parametrize("seed", range(3))
async def test_the_learned_tone_of_a_random_exchange_releases_the_line_within_four_cycles(
    pbx, seed
):
    rng = np.random.default_rng(77 + seed)
    tone = random_disconnect_tone(rng, FAMILIES[seed])
    line = pbx.line("city1")
    line.tone_plan = dataclasses.replace(line.tone_plan, busy=tone)
    line.set_acoustics(random_acoustics(rng))
    _learn(pbx, format_tone(tone))
    await call_out_answered(pbx)
    line.hang_up("tone")
    cycles_s = tone.cycle_ms / 1000
    elapsed = await _released_after(pbx, 4 * cycles_s + 2.0)
    # 3 cycles + a frame by design; the frame clock and event dispatch add a few ticks.
    assert elapsed <= 4 * cycles_s, f"{format_tone(tone)}: {elapsed:.2f} s"
    assert pbx.channel("city1").counters.tone == 1
    record = await _finish(pbx)
    assert record.cause == "tone"


@pytest.mark.parametrize("method", ["loop_current", "polarity"])
async def test_with_a_learned_tone_the_country_busy_tone_is_not_it_but_electrical_signs_still_work(
    pbx, method
):
    line = pbx.line("city1")  # the exchange plays the plan's 425 Hz busy tone
    _learn(pbx, LEARNED_US_BUSY)
    await call_out_answered(pbx)
    line.hang_up("tone")
    with pytest.raises(TimeoutError):
        await _released_after(pbx, 4.5)  # 4 cycles of the 425 Hz busy tone: not the learned one
    # The far end is long gone: now the exchange signals it electrically.
    signal = (
        LoopCurrent(port=line.port, present=False)
        if method == "loop_current"
        else Polarity(port=line.port)
    )
    line.card.send(signal)
    await _released_after(pbx, 1.0)
    counters = pbx.channel("city1").counters
    assert (counters.tone, getattr(counters, method)) == (0, 1)
    record = await _finish(pbx)
    assert record.cause == method


async def test_silence_both_ways_for_the_maximum_releases_the_line_and_counts_it(pbx) -> None:
    _learn(pbx, None, max_silence_s=1.0)
    await call_out_answered(pbx)
    elapsed = await _released_after(pbx, 3.0)
    assert 0.9 <= elapsed <= 1.6
    assert pbx.channel("city1").counters.silence == 1
    assert pbx.channel("202").state == LegState.CLEARING
    record = await _finish(pbx)
    assert record.cause == "silence"


async def test_an_office_user_talking_to_a_silent_far_party_is_never_cut(pbx) -> None:
    _learn(pbx, None, max_silence_s=1.0)
    await call_out_answered(pbx)
    talking_s = 2.5
    pbx.phone("202").say(
        np.tile(make_tone(1004), int(talking_s / 0.5) + 1)[: int(talking_s * 8000)]
    )
    elapsed = await _released_after(pbx, 6.0)
    assert talking_s + 0.9 <= elapsed <= talking_s + 1.8, elapsed
    assert pbx.channel("city1").counters.silence == 1
    await _finish(pbx)


async def test_a_far_party_speaking_over_the_busy_tone_frequency_keeps_the_line(pbx) -> None:
    # A voice at 212.5 Hz (second harmonic on 425 Hz) in syllables of the busy rhythm.
    time_axis = np.arange(4000) / 8000
    syllable = dbm0_to_peak(-18.0) * sum(
        a * np.sin(2 * np.pi * k * 212.5 * time_axis) for k, a in enumerate((0.5, 1.0, 0.5, 0.3), 1)
    )
    speech = np.tile(np.concatenate([syllable, np.zeros(4000)]), 7)
    await call_out_answered(pbx)
    pbx.line("city1").say(speech)
    with pytest.raises(TimeoutError):
        await _released_after(pbx, 7.0)
    assert pbx.channel("city1").counters.tone == 0
    record = await _finish(pbx)
    assert record.hangup_side.value == "caller"


@pytest.mark.parametrize(
    "pbx_config",
    [
        office_with_city1(
            f'disconnect_tone = "{LEARNED_US_BUSY}"\nmax_silence_s = 45\nnoise_floor_dbm0 = -40.0'
        )
    ],
    ids=["learned"],
)
async def test_the_learned_settings_in_the_config_reach_the_line(pbx) -> None:
    line_config = next(line for line in pbx.app.config.lines if line.name == "city1")
    assert line_config.disconnect_tone == LEARNED_US_BUSY
    channel = pbx.channel("city1")
    assert channel.disconnect_tone == LEARNED_US_BUSY
    assert channel._silence.max_silence_s == 45.0
    assert channel._silence.threshold_dbm0 == -32.0  # 8 dB over the -40 dBm0 floor
