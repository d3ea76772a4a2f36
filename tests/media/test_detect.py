"""Goertzel power, per-frame tone detection, cadence detection and test helpers."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.detect import (
    SILENT_LABEL,
    CadenceDetector,
    ToneDetector,
    find_tone_onset,
    frame_level_dbm0,
    goertzel_power,
    split_frames,
    tone_present,
)
from firmware.media.levels import dbm0_to_peak, dbm0_to_rms
from firmware.media.tones import (
    SPECIAL_INFORMATION_TONE,
    TONE_NAMES,
    TONE_PLANS,
    ToneSpec,
    dtmf_samples,
    render_cycle,
    render_tone,
)

RATE = 8000
CADENCED = ("busy", "congestion", "ringback")
PLANS = ("eu", "us", "uk")


def _sine(frequency: float, level_dbm0: float, duration_ms: int) -> np.ndarray:
    time = np.arange(duration_ms * RATE // 1000) / RATE
    return dbm0_to_peak(level_dbm0) * np.sin(2 * np.pi * frequency * time)


def _noise(level_dbm0: float, duration_ms: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, dbm0_to_rms(level_dbm0), duration_ms * RATE // 1000)


def _pcm(samples: np.ndarray) -> np.ndarray:
    """int16 and cut to whole 20 ms frames, as captured audio would be."""
    samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return samples[: samples.size // 160 * 160]


def _capture(
    spec: ToneSpec, duration_ms: int, *, lead_samples: int, start_ms: int = 0
) -> np.ndarray:
    """The tone joined at ``start_ms`` into its cadence, after some leading silence."""
    played = render_tone(spec, start_ms + duration_ms)[start_ms * RATE // 1000 :]
    return _pcm(np.concatenate([np.zeros(lead_samples), played]))


def _steady_frames(spec: ToneSpec, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames wholly inside one sounding step, and frames wholly silent.

    Mirrors render_cycle's layout: each sample gets the index of its chord
    (-1 for silence); a frame is steady when all its samples share one chord.
    """
    chords = spec.chords
    labels = [chords.index(step.frequencies) if step.frequencies else -1 for step in spec.steps]
    if spec.is_continuous:
        per_sample = np.full(length, labels[0])
    else:
        one_cycle = np.concatenate(
            [
                np.full(step.duration_ms * RATE // 1000, label)
                for step, label in zip(spec.steps, labels, strict=True)
            ]
        )
        if spec.repeat:
            per_sample = np.resize(one_cycle, length)
        else:
            per_sample = np.concatenate([one_cycle, np.full(length - one_cycle.size, -1)])
    frames = split_frames(per_sample)
    uniform = (frames == frames[:, :1]).all(axis=1)
    return uniform & (frames[:, 0] >= 0), uniform & (frames[:, 0] < 0)


# --------------------------------------------------------------------------- goertzel


def test_goertzel_on_2d_equals_per_row_calls() -> None:
    frames = split_frames(_pcm(_noise(-20, 200) + _sine(1004, -10, 200)))
    frequencies = (425.0, 1004.0, 1800.0)
    batch = goertzel_power(frames, frequencies)
    assert batch.shape == (len(frames), 3)
    rows = np.array([goertzel_power(frame, frequencies) for frame in frames])
    assert np.allclose(batch, rows)


def test_goertzel_power_is_mean_square_of_the_sine() -> None:
    amplitude = 10000.0
    frame = amplitude * np.sin(2 * np.pi * 400 * np.arange(160) / RATE + 0.3)
    powers = goertzel_power(frame, (400.0, 1000.0))
    assert powers[0] == pytest.approx(amplitude**2 / 2, rel=1e-9)
    assert powers[1] < 1e-6 * powers[0]


def test_frame_level_dbm0() -> None:
    frames = split_frames(_pcm(_sine(1004, 0.0, 100)))
    assert np.allclose(frame_level_dbm0(frames), 0.0, atol=0.05)
    assert frame_level_dbm0(np.zeros(160)) == -120.0
    assert frame_level_dbm0(np.zeros((3, 160))).shape == (3,)


# --------------------------------------------------------------------------- per frame


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(plan.tone(name), id=f"{country}-{name}")
        for country, plan in TONE_PLANS.items()
        for name in TONE_NAMES
    ],
)
def test_every_tone_of_every_plan_is_detected_where_it_sounds(spec: ToneSpec) -> None:
    cycle = render_cycle(spec)
    fully_on, fully_off = _steady_frames(spec, cycle.size)
    detected = ToneDetector(spec).detect(split_frames(cycle))
    assert fully_on.any()
    assert detected[fully_on].all()
    assert not detected[fully_off].any()


def test_special_information_segments_are_told_apart() -> None:
    detector = ToneDetector(SPECIAL_INFORMATION_TONE)
    labels = detector.classify(split_frames(render_cycle(SPECIAL_INFORMATION_TONE)))
    # 330 ms segments: frames 1-15 are 950 Hz, 18-31 1400 Hz, 34-48 1800 Hz, then silence
    assert (labels[1:15] == 0).all()
    assert (labels[18:31] == 1).all()
    assert (labels[34:48] == 2).all()
    assert (labels[51:99] == SILENT_LABEL).all()


@pytest.mark.parametrize("offset", [0.985, 1.015])
@pytest.mark.parametrize("country", PLANS)
def test_frequency_offsets_of_one_and_a_half_percent_are_tolerated(
    country: str, offset: float
) -> None:
    for name in TONE_NAMES:
        spec = TONE_PLANS[country].tone(name)
        shifted = render_cycle(spec.scaled(offset))
        fully_on, _ = _steady_frames(spec, shifted.size)
        detected = ToneDetector(spec).detect(split_frames(shifted))
        assert detected[fully_on].all(), name


def test_dual_tone_with_components_detuned_in_opposite_directions() -> None:
    dial = TONE_PLANS["us"].dial
    detuned = _pcm(_sine(350 * 1.015, -16, 1000) + _sine(440 * 0.985, -16, 1000))
    assert ToneDetector(dial).detect(split_frames(detuned)).all()


def test_offsets_beyond_tolerance_and_neighbouring_frequencies_are_rejected() -> None:
    assert not ToneDetector((425,)).detect(split_frames(_pcm(_sine(455, -10, 400)))).any()
    assert not ToneDetector((950,)).detect(split_frames(_pcm(_sine(1004, -10, 400)))).any()


@pytest.mark.parametrize("country", PLANS)
def test_minimum_level(country: str) -> None:
    for name in ("dial", "busy", "ringback"):
        spec = TONE_PLANS[country].tone(name)
        quiet = split_frames(render_cycle(spec.with_level(-35.0)))
        too_quiet = split_frames(render_cycle(spec.with_level(-50.0)))
        fully_on, _ = _steady_frames(spec, quiet.size)
        detector = ToneDetector(spec)
        assert detector.detect(quiet)[fully_on].all(), name
        assert not detector.detect(too_quiet).any(), name


def test_dual_tone_needs_both_components() -> None:
    ringback = ToneDetector(TONE_PLANS["uk"].ringback)  # 400+450 Hz
    assert not ringback.detect(split_frames(_pcm(_sine(400, -13, 400)))).any()
    uneven = _pcm(_sine(400, -13, 400) + _sine(450, -30, 400))  # 17 dB twist
    assert not ringback.detect(split_frames(uneven)).any()


def test_tone_in_noise_is_still_detected() -> None:
    noisy = _pcm(render_tone(TONE_PLANS["eu"].dial, 1000) + _noise(-40, 1000))
    assert ToneDetector(TONE_PLANS["eu"].dial).detect(split_frames(noisy)).all()


def test_feed_matches_batch_detection() -> None:
    frames = split_frames(render_cycle(TONE_PLANS["uk"].congestion))
    detector = ToneDetector(TONE_PLANS["uk"].congestion)
    assert [detector.feed(frame) for frame in frames] == detector.detect(frames).tolist()


# --------------------------------------------------------------------------- cadence


def _interference(country: str, other: str) -> np.ndarray:
    """About 25 s of a signal that must not trigger another tone's cadence detector."""
    if other in TONE_NAMES:
        return _capture(TONE_PLANS[country].tone(other), 25000, lead_samples=37)
    signals = {
        "silence": lambda: np.zeros(25000 * 8),
        "white_noise": lambda: _noise(-20, 25000),
        "test_tone_1004": lambda: _sine(1004, -10, 25000),
        "dtmf": lambda: np.tile(dtmf_samples("0123456789*#ABCD", 80, 80), 10),
    }
    return _pcm(signals[other]())


@pytest.mark.parametrize("lead_samples", [0, 53, 117])
@pytest.mark.parametrize("name", CADENCED)
@pytest.mark.parametrize("country", PLANS)
def test_cadence_detector_fires_within_four_cycles(
    country: str, name: str, lead_samples: int
) -> None:
    spec = TONE_PLANS[country].tone(name)
    start_ms = (lead_samples * 7) % spec.cycle_ms  # join mid-cycle too
    captured = _capture(spec, 4 * spec.cycle_ms, lead_samples=lead_samples, start_ms=start_ms)
    detector = CadenceDetector(spec)
    assert detector.feed_frames(captured)


@pytest.mark.parametrize("name", CADENCED)
@pytest.mark.parametrize("country", PLANS)
def test_cadence_detector_ignores_other_signals(country: str, name: str) -> None:
    others = [*TONE_NAMES, "silence", "white_noise", "test_tone_1004", "dtmf"]
    for other in others:
        if other == name:
            continue
        detector = CadenceDetector(TONE_PLANS[country].tone(name))
        assert not detector.feed_frames(_interference(country, other)), other


@pytest.mark.parametrize("country", PLANS)
def test_cadence_detector_tolerates_offsets_noise_and_a_dropout(country: str) -> None:
    busy = TONE_PLANS[country].busy
    shifted = _capture(busy.scaled(1.015), 4 * busy.cycle_ms, lead_samples=80)
    assert CadenceDetector(busy).feed_frames(shifted)
    noisy = _pcm(_capture(busy, 4 * busy.cycle_ms, lead_samples=0) + _noise(-40, 4 * busy.cycle_ms))
    assert CadenceDetector(busy).feed_frames(noisy)
    dropout = _capture(busy, 4 * busy.cycle_ms, lead_samples=0).copy()
    dropout[160 * 5 : 160 * 6] = 0  # one frame lost inside the first burst
    assert CadenceDetector(busy).feed_frames(dropout)


def test_frame_by_frame_feed_matches_feed_frames() -> None:
    ringback = TONE_PLANS["uk"].ringback
    captured = _capture(ringback, 4 * ringback.cycle_ms, lead_samples=41)
    streaming = CadenceDetector(ringback)
    first_hit = next(i for i, frame in enumerate(split_frames(captured)) if streaming.feed(frame))
    batch = CadenceDetector(ringback)
    assert not batch.feed_frames(captured[: first_hit * 160])
    assert batch.feed_frames(captured[first_hit * 160 : (first_hit + 1) * 160])


def test_reset_and_latch() -> None:
    busy = TONE_PLANS["eu"].busy
    detector = CadenceDetector(busy)
    assert detector.feed_frames(_capture(busy, 3000, lead_samples=0))
    assert detector.feed(np.zeros(160, dtype=np.int16))  # latched
    detector.reset()
    assert not detector.detected
    assert not detector.feed_frames(np.zeros((50, 160), dtype=np.int16))


def test_continuous_tone_detector_needs_min_duration() -> None:
    dial = TONE_PLANS["eu"].dial
    detector = CadenceDetector(dial)
    assert not detector.feed_frames(_capture(dial, 380, lead_samples=0))
    assert detector.feed_frames(_capture(dial, 40, lead_samples=0))
    assert not CadenceDetector(dial).feed_frames(_interference("eu", "white_noise"))


@pytest.mark.parametrize("country", PLANS)
def test_continuous_detector_with_long_min_duration_ignores_cadenced_bursts(country: str) -> None:
    plan = TONE_PLANS[country]
    for other in ("busy", "ringback", "congestion"):
        detector = CadenceDetector(plan.dial, min_duration_ms=2500)
        assert not detector.feed_frames(_interference(country, other)), other
    assert CadenceDetector(plan.dial, min_duration_ms=2500).feed_frames(
        _capture(plan.dial, 2600, lead_samples=0)
    )


def test_special_information_tone_cadence_checks_segment_order() -> None:
    sit = SPECIAL_INFORMATION_TONE
    detector = CadenceDetector(sit)
    assert detector.feed_frames(_capture(sit, 4 * sit.cycle_ms, lead_samples=19, start_ms=500))
    reversed_order = ToneSpec((((1800,), 330), ((1400,), 330), ((950,), 330), ((), 1000)))
    fooled = CadenceDetector(sit)
    assert not fooled.feed_frames(_capture(reversed_order, 4 * sit.cycle_ms, lead_samples=0))


def test_play_once_confirmation_is_detected_once_heard() -> None:
    confirmation = TONE_PLANS["us"].confirmation
    captured = _pcm(np.concatenate([np.zeros(1200), render_tone(confirmation, 1000)]))
    assert CadenceDetector(confirmation).feed_frames(captured)
    assert not CadenceDetector(confirmation).feed_frames(_interference("us", "congestion"))


def test_more_cycles_separate_spanish_busy_from_congestion() -> None:
    spain = TONE_PLANS["es"]
    congestion = _interference("es", "congestion")
    assert CadenceDetector(spain.busy).feed_frames(congestion)  # shares 200/200 twice
    assert not CadenceDetector(spain.busy, cycles=3).feed_frames(congestion)
    assert CadenceDetector(spain.busy, cycles=3).feed_frames(_interference("es", "busy"))


# --------------------------------------------------------------------------- helpers


def test_speech_path_test_tone_helpers() -> None:
    captured = _pcm(
        np.concatenate([np.zeros(2400), _sine(1004, -16, 1000)]) + _noise(-45, 1300, seed=3)
    )
    assert tone_present(captured, (1004,))
    assert not tone_present(captured, (1004,), min_fraction=0.9)
    assert not tone_present(captured, (425,))
    assert find_tone_onset(captured, (1004,)) == pytest.approx(0.3, abs=0.021)
    assert find_tone_onset(captured, (425,)) is None
    assert not tone_present(np.zeros(100, dtype=np.int16), (1004,))


def test_dial_tone_onset_and_consecutive_frames() -> None:
    dial = TONE_PLANS["uk"].dial
    captured = _pcm(np.concatenate([np.zeros(8 * 731), render_tone(dial, 500)]))
    assert find_tone_onset(captured, dial) == pytest.approx(0.731, abs=0.021)
    blip = _pcm(np.concatenate([np.zeros(1600), render_tone(dial, 20), np.zeros(1600)]))
    assert find_tone_onset(blip, dial) is not None
    assert find_tone_onset(blip, dial, min_consecutive_frames=2) is None
