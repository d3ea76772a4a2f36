"""Tone specs, national plans, Asterisk-syntax parsing and rendering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from firmware.media.detect import goertzel_power, split_frames
from firmware.media.levels import (
    ZERO_DBM0_PEAK,
    db_to_gain,
    dbm0_to_peak,
    dbm0_to_power,
    dbm0_to_rms,
    gain_to_db,
    peak_to_dbm0,
    power_to_dbm0,
    rms_to_dbm0,
)
from firmware.media.tones import (
    DTMF_COLUMN_FREQUENCIES,
    DTMF_FREQUENCIES,
    DTMF_ROW_FREQUENCIES,
    SPECIAL_INFORMATION_TONE,
    TONE_NAMES,
    TONE_PLANS,
    ToneSpec,
    ToneStep,
    dtmf_samples,
    format_tone,
    get_tone_plan,
    parse_tone,
    render_cycle,
    render_tone,
)

ALL_TONES = [
    pytest.param(plan.tone(name), id=f"{country}-{name}")
    for country, plan in TONE_PLANS.items()
    for name in TONE_NAMES
]


# --------------------------------------------------------------------------- levels


def test_zero_dbm0_sine_peak_follows_g711_convention() -> None:
    # 32767 / 10**(3.14 / 20): about 22826 (the brief's "≈ 22767" is 3.16 dB, a slip)
    assert pytest.approx(22826.4, abs=0.1) == ZERO_DBM0_PEAK
    assert dbm0_to_peak(3.14) == pytest.approx(32767)
    assert peak_to_dbm0(32767) == pytest.approx(3.14)


def test_level_conversions_round_trip_on_scalars_and_arrays() -> None:
    levels = np.array([-50.0, -13.0, 0.0, 3.0])
    assert np.allclose(peak_to_dbm0(dbm0_to_peak(levels)), levels)
    assert np.allclose(rms_to_dbm0(dbm0_to_rms(levels)), levels)
    assert np.allclose(power_to_dbm0(dbm0_to_power(levels)), levels)
    assert gain_to_db(db_to_gain(-6.0)) == pytest.approx(-6.0)
    assert isinstance(dbm0_to_peak(-10.0), float)
    assert power_to_dbm0(0.0) == -120.0


# --------------------------------------------------------------------------- specs


def test_cadenced_constructor_builds_alternating_steps() -> None:
    busy = ToneSpec.cadenced((425,), (500, 500))
    assert busy.steps == (ToneStep((425.0,), 500), ToneStep((), 500))
    assert busy.cadence_ms == (500, 500)
    assert busy.frequencies == (425.0,)
    assert busy.cycle_ms == 1000
    assert not busy.is_continuous


def test_special_information_tone_is_one_repeating_sequence() -> None:
    sit = SPECIAL_INFORMATION_TONE
    assert sit.repeat
    assert sit.frequencies == (950.0, 1400.0, 1800.0)
    assert sit.chords == ((950.0,), (1400.0,), (1800.0,))
    assert sit.cadence_ms == (990, 1000)


def test_default_levels_follow_single_and_dual_tone_convention() -> None:
    dial = ToneSpec.continuous((350, 440))
    assert dial.step_level_dbm0(dial.steps[0]) == -16.0
    busy = ToneSpec.cadenced((425,), (500, 500))
    assert busy.step_level_dbm0(busy.steps[0]) == -13.0
    assert busy.with_level(-20).step_level_dbm0(busy.steps[0]) == -20.0


@pytest.mark.parametrize(
    "steps",
    [
        (),
        (((425,), 0), ((), 500)),
        (((350, 440, 480), 500),),
        (((-425,), 500),),
        (((425,), -1),),
        (((425, 425), 500),),
    ],
)
def test_invalid_specs_are_rejected(steps: tuple) -> None:
    with pytest.raises(ValueError):
        ToneSpec(steps)


# --------------------------------------------------------------------------- plans


def test_every_plan_has_every_tone_and_a_ring_cadence() -> None:
    for required in ("eu", "pt", "de", "fr", "es", "it", "uk", "us", "ru", "cz"):
        plan = TONE_PLANS[required]
        assert plan.country == required
        assert set(plan.tones) == set(TONE_NAMES)
        assert len(plan.ring_cadence_ms) % 2 == 0
        assert not plan.confirmation.repeat


def test_reference_values_of_key_plans() -> None:
    eu, uk, us = TONE_PLANS["eu"], TONE_PLANS["uk"], TONE_PLANS["us"]
    assert format_tone(eu.dial) == "425"
    assert format_tone(eu.ringback) == "425/1000,0/4000"
    assert format_tone(eu.busy) == "425/500,0/500"
    assert format_tone(eu.congestion) == "425/250,0/250"
    assert format_tone(uk.dial) == "350+450"
    assert format_tone(uk.ringback) == "400+450/400,0/200,400+450/400,0/2000"
    assert format_tone(uk.busy) == "400/375,0/375"
    assert format_tone(uk.congestion) == "400/400,0/350,400/225,0/525"
    assert format_tone(us.dial) == "350+440"
    assert format_tone(us.ringback) == "440+480/2000,0/4000"
    assert format_tone(us.busy) == "480+620/500,0/500"
    assert format_tone(us.congestion) == "480+620/250,0/250"
    assert us.ring_cadence_ms == (2000, 4000)
    assert uk.ring_cadence_ms == (400, 200, 400, 2000)


def test_get_tone_plan_is_case_insensitive_and_applies_overrides() -> None:
    assert get_tone_plan(" US ") is TONE_PLANS["us"]
    custom_busy = ToneSpec.cadenced((425,), (400, 400))
    plan = get_tone_plan("pt", {"busy": custom_busy, "dial": "425/200,0/200"})
    assert plan.busy == custom_busy
    assert plan.dial == parse_tone("425/200,0/200")
    assert plan.ringback == TONE_PLANS["pt"].ringback
    assert TONE_PLANS["pt"].busy != custom_busy  # the shared table is untouched


def test_unknown_country_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown tone plan country 'xx'") as error:
        get_tone_plan("xx")
    for country in TONE_PLANS:
        assert country in str(error.value)


def test_unknown_override_name_lists_tone_names() -> None:
    with pytest.raises(ValueError, match=r"'ringing'.*ringback"):
        get_tone_plan("eu", {"ringing": "425"})


# --------------------------------------------------------------------------- syntax


@pytest.mark.parametrize("spec", ALL_TONES)
def test_format_parse_round_trip(spec: ToneSpec) -> None:
    assert parse_tone(format_tone(spec)) == dataclasses.replace(spec, level_dbm0=None)


def test_parse_examples() -> None:
    dial = parse_tone("350+440")
    assert dial.is_continuous and dial.frequencies == (350.0, 440.0)
    once = parse_tone(" !425/100 , !0/100, !425/100, !0 ")
    assert not once.repeat
    assert once.steps == (ToneStep((425.0,), 100), ToneStep((), 100), ToneStep((425.0,), 100))
    assert parse_tone("425.5/200,0/200").frequencies == (425.5,)
    assert format_tone(parse_tone("425.5/200,0/200")) == "425.5/200,0/200"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("425/abc", "step 1 '425/abc'"),
        ("425/500,0/0", "step 2 '0/0'"),
        ("425/500,abc/500", "step 2 'abc/500'"),
        ("425/500,425", "step 2 '425'"),
        ("425/500,,0/500", "step 2 ''"),
        ("425*25/500", "modulated"),
        ("0+440/100", "'0' means silence"),
        ("350+440+480/100", "at most 2"),
        ("-425/100", "step 1"),
        ("!425/100,425/100", "mixing play-once"),
    ],
)
def test_parse_errors_name_the_bad_step(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_tone(text)
    assert fragment in str(error.value)


# --------------------------------------------------------------------------- rendering


def _max_step(samples: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(samples.astype(np.int64)))))


@pytest.mark.parametrize("spec", ALL_TONES)
def test_render_cycle_is_whole_frames_and_loops_seamlessly(spec: ToneSpec) -> None:
    cycle = render_cycle(spec)
    assert cycle.dtype == np.int16
    assert cycle.size > 0 and cycle.size % 160 == 0
    wrap_step = abs(int(cycle[0]) - int(cycle[-1]))
    assert wrap_step <= _max_step(cycle) + 1
    if not spec.is_continuous:
        # bursts ramp to silence, so the wrap point is silence to silence
        assert cycle[0] == 0 and abs(int(cycle[-1])) <= 1


def test_continuous_buffers_are_short_whole_periods() -> None:
    assert render_cycle(ToneSpec.continuous((425,))).size == 320  # 17 periods in 40 ms
    assert render_cycle(ToneSpec.continuous((350, 440))).size == 800  # 100 ms
    odd = render_cycle(ToneSpec.continuous((425.37,)))
    assert odd.size % 160 == 0
    assert abs(int(odd[0]) - int(odd[-1])) <= _max_step(odd) + 1


def test_cadenced_buffer_holds_whole_cycles_without_stretching() -> None:
    uk_busy = TONE_PLANS["uk"].busy  # 750 ms cycle -> two cycles in 1.5 s
    assert render_cycle(uk_busy).size == 2 * 750 * 8
    eu_busy = render_cycle(TONE_PLANS["eu"].busy)
    assert eu_busy.size == 8000
    assert np.count_nonzero(eu_busy[4000 + 8 :]) == 0
    assert np.count_nonzero(eu_busy[40:3960] == 0) < 40  # only zero crossings


def test_bursts_ramp_in_and_out() -> None:
    burst = render_cycle(TONE_PLANS["eu"].busy)[:4000].astype(float)
    peak = dbm0_to_peak(-13.0)
    assert np.max(np.abs(burst[:8])) < 0.2 * peak
    assert np.max(np.abs(burst[-8:])) < 0.2 * peak
    assert np.max(np.abs(burst)) == pytest.approx(peak, rel=0.01)


def test_render_levels_match_dbm0() -> None:
    test_tone = render_cycle(ToneSpec.continuous((1004,), level_dbm0=0.0))
    rms = np.sqrt(np.mean(test_tone.astype(float) ** 2))
    assert rms_to_dbm0(rms) == pytest.approx(0.0, abs=0.02)
    dial = render_cycle(TONE_PLANS["us"].dial)
    powers = goertzel_power(dial, (350, 440))
    assert np.allclose(power_to_dbm0(powers), -16.0, atol=0.05)


def test_play_once_tone_renders_once_then_silence() -> None:
    confirmation = TONE_PLANS["us"].confirmation
    cycle = render_cycle(confirmation)
    assert cycle.size == 500 * 8
    played = render_tone(confirmation, 2000)
    assert played.size == 16000
    assert np.array_equal(played[: cycle.size], cycle)
    assert not played[cycle.size :].any()
    looped = render_tone(TONE_PLANS["us"].busy, 2500)
    assert np.array_equal(looped[8000:16000], render_cycle(TONE_PLANS["us"].busy))


def test_render_rejects_frequencies_above_nyquist() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        render_cycle(ToneSpec.continuous((4200,)))


# --------------------------------------------------------------------------- DTMF


def test_dtmf_digits_put_energy_on_their_row_and_column() -> None:
    digits = "0123456789*#ABCD"
    samples = dtmf_samples(digits, on_ms=80, off_ms=80)
    assert samples.dtype == np.int16
    assert samples.size == len(digits) * 160 * 8
    frames = split_frames(samples).reshape(len(digits), 8, 160)
    matrix = DTMF_ROW_FREQUENCIES + DTMF_COLUMN_FREQUENCIES
    for index, digit in enumerate(digits):
        burst = frames[index, 1]  # 20-40 ms into the 80 ms burst
        powers = goertzel_power(burst, matrix)
        strongest = {matrix[i] for i in np.argsort(powers)[-2:]}
        assert strongest == set(DTMF_FREQUENCIES[digit]), digit
        low, high = (powers[matrix.index(f)] for f in DTMF_FREQUENCIES[digit])
        assert power_to_dbm0(high) == pytest.approx(-10.0, abs=0.5)
        assert power_to_dbm0(high) - power_to_dbm0(low) == pytest.approx(2.0, abs=0.5)
        assert not frames[index, 4:].any()  # the 80 ms gap is silent


def test_dtmf_rejects_unknown_digits() -> None:
    with pytest.raises(ValueError, match="'EX'"):
        dtmf_samples("12X3E")
    assert dtmf_samples("").size == 0
    assert dtmf_samples("a").size == dtmf_samples("A").size
