"""A city call on a line whose hybrid echoes the office's own voice (12 dB ERL, 10 ms): with
the line's echo canceller (the default `echo_tail_ms = 32`) the extension hears much less
of itself than with `echo_tail_ms = 0`, and the city party still reaches it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from firmware.config.load import ConfigError, parse_config
from firmware.lines.sim_acoustics import LineAcoustics
from firmware.media.hybrid import pink_noise
from firmware.media.levels import power_to_dbm0
from tests.lines.line_tools import call_out_answered, office_with_city1

RATE = 8000
ECHOING_LINE = LineAcoustics(noise_dbm0=-60.0, echo_delay_ms=10.0, echo_loss_db=12.0, seed=3)
TALK_DBM0 = -15.0


def _set_echo_tail(pbx, tail_ms: int) -> None:
    """As a config reload gives the line (its other settings unchanged)."""
    channel = pbx.channel("city1")
    channel.configure(
        disconnect=channel.disconnect_methods,
        answer_supervision=channel.answer_supervision,
        dial_mode="dtmf",
        echo_tail_ms=tail_ms,
    )


async def _hang_up(pbx) -> None:
    pbx.phone("202").on_hook()
    await pbx.wait_idle()
    await pbx.sim.wait_until(lambda: not pbx.line("city1").seized, 2.0, "line released")


async def _own_voice_heard_dbm0(pbx, seed: int) -> float:
    """The extension talks (noise, 3 s); the level of what it hears back over 1.0-2.8 s."""
    phone = pbx.phone("202")
    talk = np.rint(pink_noise(3.0, np.random.default_rng(seed), TALK_DBM0)).astype(np.int16)
    mark = phone.mark()
    phone.say(talk)
    await asyncio.sleep(3.2)
    heard = phone.heard(mark)[RATE : int(2.8 * RATE)].astype(float)
    assert heard.size == int(1.8 * RATE)
    return power_to_dbm0(float(np.mean(heard**2)))


async def test_the_extension_hears_far_less_of_its_own_voice_with_the_canceller(pbx) -> None:
    line, channel = pbx.line("city1"), pbx.channel("city1")
    assert channel.echo_tail_ms == 32, "the line config's default reaches the line"
    line.set_acoustics(ECHOING_LINE)

    await call_out_answered(pbx)
    cancelled = await _own_voice_heard_dbm0(pbx, seed=1)
    state = pbx.app.mixer.echo_state(channel.slot)
    assert state is not None
    # the echo is found where the simulated line puts it: 10 ms after the frame the card
    # played (sent the tick before), the window opening 1 ms early
    assert state.bulk_delay_ms == pytest.approx(9.0, abs=1.0)
    assert state.erle_db > 20.0
    await pbx.speech_both_ways(line, pbx.phone("202"))
    await _hang_up(pbx)

    _set_echo_tail(pbx, 0)
    await call_out_answered(pbx)
    assert pbx.app.mixer.echo_state(channel.slot) is None
    echoed = await _own_voice_heard_dbm0(pbx, seed=1)
    await pbx.speech_both_ways(line, pbx.phone("202"))
    await _hang_up(pbx)

    # without the canceller the extension hears its echo: talk level minus the ERL
    assert echoed == pytest.approx(TALK_DBM0 - 12.0, abs=1.5)
    # with it, 20 dB less at least (the line's noise, -60 dBm0, is 33 dB under the echo)
    assert echoed - cancelled >= 20.0, f"echo {echoed:.1f} dBm0, cancelled {cancelled:.1f}"


async def test_a_new_call_on_the_line_starts_with_a_fresh_canceller(pbx) -> None:
    line, channel = pbx.line("city1"), pbx.channel("city1")
    line.set_acoustics(ECHOING_LINE)
    await call_out_answered(pbx)
    await _own_voice_heard_dbm0(pbx, seed=2)
    state = pbx.app.mixer.echo_state(channel.slot)
    assert state is not None and state.erle_db > 20.0
    await _hang_up(pbx)
    await call_out_answered(pbx)
    state = pbx.app.mixer.echo_state(channel.slot)
    assert state is not None and (state.erle_db, state.bulk_delay_ms) == (0.0, 0.0)
    await _hang_up(pbx)


@pytest.mark.parametrize(
    ("pbx_config", "tail_ms"),
    [
        (office_with_city1("echo_tail_ms = 0"), 0),
        (office_with_city1("echo_tail_ms = 48"), 48),
    ],
)
async def test_the_line_config_sets_the_canceller_of_the_call_slot(pbx, tail_ms) -> None:
    channel = pbx.channel("city1")
    assert channel.echo_tail_ms == tail_ms
    await call_out_answered(pbx)
    mixer = pbx.app.mixer
    assert (mixer.echo_state(channel.slot) is not None) == bool(tail_ms)
    banks = [bank.tail_ms for bank in mixer._echo_banks]
    assert banks == ([tail_ms] if tail_ms else [])
    await _hang_up(pbx)
    assert mixer._echo_banks == [], "the call's slot gave its row back"


def test_a_tail_under_the_cancellers_shortest_is_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="echo_tail_ms must be 0 \\(off\\) or 8-128 ms"):
        parse_config(office_with_city1("echo_tail_ms = 5"), "<test>")
