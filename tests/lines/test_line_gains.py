"""A city line's learned gains (`rx_gain_db`, `tx_gain_db`) through the simulated line card:
what the city party says reaches the extension's handset `rx_gain_db` louder, what the
extension says reaches the line `tx_gain_db` louder; 0 dB passes every sample unchanged;
a config reload changes the gains of a call in progress and of the next call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from firmware.media.levels import dbm0_to_rms, rms_to_dbm0
from firmware.media.mixer import FRAME_SAMPLES
from tests.conftest import start_pbx
from tests.lines.line_tools import call_out_answered, office_with_city1

RATE = 8000
TONE_DBM0 = -20.0


def _tone(frequency: float, seconds: float = 1.0) -> np.ndarray:
    samples = np.sin(2 * np.pi * frequency * np.arange(int(seconds * RATE)) / RATE)
    return np.rint(samples * dbm0_to_rms(TONE_DBM0) * np.sqrt(2)).astype(np.int16)


def _level_dbm0(samples: np.ndarray) -> float:
    return float(rms_to_dbm0(float(np.sqrt(np.mean(samples.astype(float) ** 2)))))


async def _hang_up(pbx) -> None:
    pbx.phone("202").on_hook()
    await pbx.wait_idle()
    await pbx.sim.wait_until(lambda: not pbx.line("city1").seized, 2.0, "line released")


async def _heard_level(talker, listener, frequency: float) -> float:
    """`talker` says a 1 s tone at TONE_DBM0; its level at `listener` over the middle 0.6 s."""
    mark = listener.mark()
    talker.say(_tone(frequency))
    await asyncio.sleep(1.3)
    heard = listener.heard(mark)
    loud = np.flatnonzero(np.abs(heard) > dbm0_to_rms(TONE_DBM0 - 20.0))
    assert loud.size > RATE // 2, "the tone came through"
    middle = heard[loud[0] + RATE // 5 : loud[0] + 4 * RATE // 5]
    assert middle.size == 3 * RATE // 5
    return _level_dbm0(middle)


async def _levels(pbx) -> tuple[float, float]:
    """(city party at the handset, extension at the line) in dB relative to what was said."""
    phone, line = pbx.phone("202"), pbx.line("city1")
    inbound = await _heard_level(line, phone, 1004.0) - TONE_DBM0
    outbound = await _heard_level(phone, line, 1400.0) - TONE_DBM0
    return inbound, outbound


async def _passes_unchanged(pbx) -> None:
    """Noise said on either side arrives sample for sample (aligned on the first frame)."""
    phone, line = pbx.phone("202"), pbx.line("city1")
    rng = np.random.default_rng(5)
    for talker, listener in ((line, phone), (phone, line)):
        said = np.rint(rng.normal(0.0, dbm0_to_rms(-15.0), 25 * FRAME_SAMPLES)).astype(np.int16)
        said[said == 0] = 1  # every sample non-zero: the start is found unambiguously
        mark = listener.mark()
        talker.say(said)
        await asyncio.sleep(0.8)
        heard = listener.heard(mark)
        start = int(np.flatnonzero(heard)[0])
        np.testing.assert_array_equal(heard[start : start + said.size], said)


@pytest.mark.parametrize("pbx_config", [office_with_city1("rx_gain_db = 6.0\ntx_gain_db = -6.0")])
async def test_learned_gains_reach_the_handset_and_the_line(pbx) -> None:
    channel = pbx.channel("city1")
    assert (channel.rx_gain_db, channel.tx_gain_db) == (6.0, -6.0)
    await call_out_answered(pbx, settle_s=0.2)
    assert pbx.app.mixer.gain_db(channel.slot) == (6.0, -6.0)
    inbound, outbound = await _levels(pbx)
    assert inbound == pytest.approx(6.0, abs=0.1), "the city party 6 dB louder at the handset"
    assert outbound == pytest.approx(-6.0, abs=0.1), "the extension 6 dB quieter on the line"
    await _hang_up(pbx)


async def test_zero_db_is_bit_exact_both_ways(pbx) -> None:
    channel = pbx.channel("city1")
    assert (channel.rx_gain_db, channel.tx_gain_db) == (0.0, 0.0)
    await call_out_answered(pbx, settle_s=0.2)
    await _passes_unchanged(pbx)
    await _hang_up(pbx)


async def test_a_clipping_gain_saturates_rather_than_wraps(pbx) -> None:
    pbx.channel("city1").set_gains(12.0, 0.0)  # as a reload would
    await call_out_answered(pbx, settle_s=0.2)
    phone, line = pbx.phone("202"), pbx.line("city1")
    loud = np.rint(20000 * np.sin(2 * np.pi * 500 * np.arange(RATE // 2) / RATE)).astype(np.int16)
    loud[loud == 0] = 1
    mark = phone.mark()
    line.say(loud)
    await asyncio.sleep(0.8)
    heard = phone.heard(mark)
    start = int(np.flatnonzero(heard)[0])
    heard = heard[start : start + loud.size].astype(float)
    expected = np.clip(np.rint(loud * 10 ** (12 / 20)), -32768, 32767)
    assert np.max(np.abs(heard - expected)) <= 1.0
    assert np.sum(heard == 32767) > 1000, "peaks held at full scale, not wrapped"
    await _hang_up(pbx)


async def test_a_reload_changes_the_gains_of_the_call_and_of_the_next(data_dir: Path) -> None:
    path = data_dir / "minipbx.toml"
    path.write_text(office_with_city1("rx_gain_db = 0.0"))
    pbx = await start_pbx(path.read_text(), data_dir, str(path))
    try:
        channel = pbx.channel("city1")
        await call_out_answered(pbx, settle_s=0.2)
        await _passes_unchanged(pbx)

        path.write_text(office_with_city1("rx_gain_db = 6.0\ntx_gain_db = -3.0"))
        assert (await pbx.app.reload())["ok"]
        inbound, outbound = await _levels(pbx)  # the call in progress, at once
        assert inbound == pytest.approx(6.0, abs=0.1)
        assert outbound == pytest.approx(-3.0, abs=0.1)
        await _hang_up(pbx)

        path.write_text(office_with_city1("rx_gain_db = -4.0"))  # while the line is idle
        assert (await pbx.app.reload())["ok"]
        assert (channel.rx_gain_db, channel.tx_gain_db) == (-4.0, 0.0)
        await call_out_answered(pbx, settle_s=0.2)
        inbound, outbound = await _levels(pbx)
        assert inbound == pytest.approx(-4.0, abs=0.1)
        assert outbound == pytest.approx(0.0, abs=0.1)
        await _hang_up(pbx)

        path.write_text(office_with_city1(""))  # back to 0 dB: untouched again
        assert (await pbx.app.reload())["ok"]
        await call_out_answered(pbx, settle_s=0.2)
        await _passes_unchanged(pbx)
        await _hang_up(pbx)
    finally:
        await pbx.app.stop()
