"""The simulated hybrid: responses, ERL, bulk delay, streaming, noise, distortion, codec."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.hybrid import (
    RESPONSE_KINDS,
    HybridEchoPath,
    hybrid_response,
    pink_noise,
    speech_like,
)
from firmware.media.levels import dbm0_to_peak, power_to_dbm0


@pytest.mark.parametrize("kind", RESPONSE_KINDS)
def test_responses_have_unit_energy_and_the_same_seed_gives_the_same_one(kind):
    response = hybrid_response(kind, seed=3)
    assert np.sum(response**2) == pytest.approx(1.0)
    assert np.array_equal(response, hybrid_response(kind, seed=3))
    assert not np.array_equal(response, hybrid_response(kind, seed=4))


def test_responses_get_longer_from_short_to_long():
    lengths = [hybrid_response(kind).size for kind in ("short", "medium", "long")]
    assert lengths == [32, 96, 192]  # 4, 12 and 24 ms at 8 kHz


def test_an_unknown_kind_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="short"):
        hybrid_response("cable")


def test_the_echo_of_an_impulse_is_the_response_after_the_delay_scaled_by_the_erl():
    response = hybrid_response("medium")
    path = HybridEchoPath(response, delay_ms=10.0, erl_db=6.0)
    impulse = np.zeros(400)
    impulse[0] = 1000.0
    echo = path.echo(impulse)
    assert np.all(echo[:80] == 0.0)  # 10 ms = 80 samples of bulk delay
    gain = 10 ** (-6.0 / 20)
    assert np.allclose(echo[80 : 80 + response.size], 1000.0 * gain * response)


@pytest.mark.parametrize("erl_db", [6.0, 12.0, 20.0])
def test_white_noise_comes_back_erl_db_weaker(erl_db):
    far = np.random.default_rng(1).normal(0.0, 3000.0, 80000)
    echo = HybridEchoPath.of_kind("long", erl_db=erl_db).echo(far)
    measured = 10 * np.log10(np.mean(far[400:] ** 2) / np.mean(echo[400:] ** 2))
    assert measured == pytest.approx(erl_db, abs=0.2)


def test_frame_by_frame_is_the_same_as_one_go():
    far = np.random.default_rng(2).normal(0.0, 2000.0, 1600)
    whole = HybridEchoPath.of_kind("resonant", delay_ms=30.0).echo(far)
    path = HybridEchoPath.of_kind("resonant", delay_ms=30.0)
    framed = np.concatenate([path.echo(far[start : start + 160]) for start in range(0, 1600, 160)])
    assert np.allclose(framed, whole)


def test_receive_adds_the_near_end_and_noise_at_its_level_and_clips():
    path = HybridEchoPath.of_kind("short", erl_db=20.0, noise_dbm0=-50.0, seed=5)
    silence = np.zeros(80000)
    noise = path.receive(silence).astype(float)
    assert power_to_dbm0(np.mean(noise**2)) == pytest.approx(-50.0, abs=0.1)
    loud = path.receive(silence[:160], np.full(160, 40000.0))
    assert loud.dtype == np.int16 and np.all(loud == 32767)


def test_distortion_gives_a_third_harmonic_at_the_stated_level():
    time = np.arange(8000) / 8000
    sine = dbm0_to_peak(0.0) * np.sin(2 * np.pi * 500 * time)
    path = HybridEchoPath(np.array([1.0]), erl_db=0.0, distortion_db=-40.0)
    spectrum = np.abs(np.fft.rfft(path.echo(sine)))
    undistorted = np.abs(np.fft.rfft(sine))
    # bins are 1 Hz apart: the 1500 Hz harmonic against the 500 Hz sine that went in
    assert 20 * np.log10(spectrum[1500] / undistorted[500]) == pytest.approx(-40.0, abs=0.01)


def test_companding_quantises_like_the_codec():
    path = HybridEchoPath(np.array([1.0]), erl_db=0.0, companding="alaw")
    received = path.receive(np.array([1000.0, 1003.0, -1000.0]))
    assert received.tolist() == [1008, 1008, -1008]  # A-law segment 4: steps of 16, mid-step


def test_speech_like_has_syllables_pauses_and_the_level_asked_for():
    signal = speech_like(10.0, np.random.default_rng(7), level_dbm0=-20.0)
    frames = signal.reshape(-1, 160)
    levels = power_to_dbm0(np.mean(frames**2, axis=1))
    active = levels > levels.max() - 20
    assert 0.45 < np.mean(active) < 0.9  # talk spurts and pauses
    assert power_to_dbm0(np.mean(frames[active] ** 2)) == pytest.approx(-20.0, abs=0.01)
    # syllabic envelope: the level moves by more than 10 dB inside talk spurts
    assert np.percentile(levels[active], 90) - np.percentile(levels[active], 10) > 10


def test_pink_noise_falls_3_db_per_octave():
    noise = pink_noise(20.0, np.random.default_rng(8), level_dbm0=-20.0)
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(noise.size, 1 / 8000)
    low = power[(frequencies > 400) & (frequencies < 800)].mean()
    high = power[(frequencies > 1600) & (frequencies < 3200)].mean()
    assert 10 * np.log10(low / high) == pytest.approx(6.0, abs=0.5)  # two octaves
    assert power_to_dbm0(np.mean(noise**2)) == pytest.approx(-20.0, abs=0.01)
