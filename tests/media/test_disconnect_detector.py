"""The runtime disconnect-tone detector: random exchanges recognised within 4 cycles, and
nothing else (other cadences, detuned tones, voices, instruments, DTMF) ever taken for it."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.lines.sim_acoustics import FAMILIES, random_disconnect_tone
from firmware.media.disconnect import (
    DisconnectCriteria,
    DisconnectToneDetector,
    SilenceTimer,
    frame_power,
    silence_threshold_dbm0,
)
from firmware.media.levels import ZERO_DBM0_POWER, dbm0_to_peak, dbm0_to_rms
from firmware.media.tones import TONE_PLANS, ToneSpec, dtmf_samples, format_tone, render_tone

RATE = 8000
FRAME = 160


def _pcm(samples: np.ndarray) -> np.ndarray:
    samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return samples[: samples.size // FRAME * FRAME]


def _frames_to_detect(detector: DisconnectToneDetector, samples: np.ndarray) -> int | None:
    detection = detector.scan(samples)
    return None if detection is None else detection.frame + 1


def _line(
    tone: ToneSpec, seconds: float, rng: np.random.Generator, start_ms: int = 0
) -> np.ndarray:
    """The tone as a real line delivers it: some loss, a noise floor, a slight detuning."""
    detuned = tone.scaled(rng.uniform(0.995, 1.005))
    played = render_tone(detuned, start_ms + int(seconds * 1000))[start_ms * RATE // 1000 :]
    loss = 10 ** (rng.uniform(-9.0, 0.0) / 20)
    noise = rng.normal(0.0, dbm0_to_rms(rng.uniform(-70.0, -50.0)), played.size)
    return played * loss + noise


# ----- recognised -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_a_random_exchange_tone_is_recognised_within_four_cycles(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    tone = random_disconnect_tone(rng, FAMILIES[seed % 3])
    configured = format_tone(tone)  # what calibration stores: the level is not part of it
    lead = _pcm(rng.normal(0.0, dbm0_to_rms(-60.0), 2 * RATE))  # a quiet line before
    start_ms = 0 if seed % 2 else int(rng.integers(0, tone.cycle_ms))  # mid-cycle at times
    samples = np.concatenate([lead, _pcm(_line(tone, 6 * tone.cycle_ms / 1000, rng, start_ms))])
    frames = _frames_to_detect(DisconnectToneDetector([configured]), samples)
    assert frames is not None, f"{configured} not recognised"
    cycles = (frames * FRAME - lead.size) / (tone.cycle_ms * RATE / 1000)
    assert cycles <= 4.0, f"{configured}: {cycles:.2f} cycles"
    if start_ms == 0:  # from its first burst: three whole cycles and the next burst's frame
        assert 2.9 <= cycles <= 3.1, f"{configured}: {cycles:.2f} cycles"


@pytest.mark.parametrize("country", sorted(TONE_PLANS))
@pytest.mark.parametrize("name", ["busy", "congestion"])
def test_every_shipped_busy_and_congestion_tone_is_recognised_frame_for_frame(country, name):
    tone = TONE_PLANS[country].tone(name)
    samples = _pcm(np.concatenate([np.zeros(RATE), render_tone(tone, 6 * tone.cycle_ms)]))
    batch = _frames_to_detect(DisconnectToneDetector([tone]), samples)
    streaming = DisconnectToneDetector([tone])
    fired = next(
        (
            index + 1
            for index, frame in enumerate(samples.reshape(-1, FRAME))
            if streaming.feed(frame)
        ),
        None,
    )
    assert batch == fired, "scan() and feed() fire on the same frame"
    # Three cycles after the tone starts, at the frame where the fourth burst begins.
    expected = RATE // FRAME + 3 * tone.cycle_ms // 20
    assert batch is not None and expected <= batch <= expected + 2


def test_the_detector_knows_which_tone_it_heard() -> None:
    plan = TONE_PLANS["uk"]
    detector = DisconnectToneDetector([plan.busy, plan.congestion])
    detection = detector.scan(_pcm(render_tone(plan.congestion, 8000)))
    assert detection is not None and detection.tone == 1


def test_a_continuous_disconnect_tone_needs_three_seconds() -> None:
    detector = DisconnectToneDetector(["425"])
    assert detector.scan(_pcm(render_tone(ToneSpec.continuous((425,)), 2900))) is None
    detector.reset()
    frames = _frames_to_detect(detector, _pcm(render_tone(ToneSpec.continuous((425,)), 4000)))
    assert frames == 150  # 3 s of 20 ms frames


# ----- not recognised ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factor, recognised", [(1.01, True), (0.99, True), (1.025, False), (0.975, False)]
)
def test_the_burst_frequency_is_measured_to_better_than_one_frame_can(factor, recognised) -> None:
    # 425 Hz vs 435.6 Hz differ by 11 Hz: a 20 ms frame cannot tell them apart, a burst can.
    configured = ToneSpec.cadenced((425,), (500, 500))
    samples = _pcm(render_tone(configured.scaled(factor), 8000))
    assert (DisconnectToneDetector([configured]).scan(samples) is not None) == recognised


@pytest.mark.parametrize(
    "other",
    [
        "425/1000,0/4000",  # ringback on the same frequency
        "425/200,0/200,425/200,0/4000",  # call waiting
        "425/250,0/250",  # congestion, when busy is the learned tone
        "425/750,0/750",  # a cadence 50 % longer
        "425",  # dial tone
        "440/500,0/500",  # the French busy tone on a 425 Hz line
        "425+525/500,0/500",  # a dual tone sharing one frequency
    ],
)
def test_other_tones_of_the_exchange_are_not_the_busy_tone(other: str) -> None:
    from firmware.media.tones import parse_tone

    samples = _pcm(render_tone(parse_tone(other), 20000))
    assert DisconnectToneDetector(["425/500,0/500"]).scan(samples) is None


def _jittered(on_ms: list[int], off_ms: list[int], frequency: float = 425.0) -> np.ndarray:
    pieces = []
    for on, off in zip(on_ms, off_ms, strict=True):
        pieces += [render_tone(ToneSpec.cadenced((frequency,), (on, 10)), on), np.zeros(off * 8)]
    return _pcm(np.concatenate(pieces))


def test_a_cadence_that_wanders_from_cycle_to_cycle_is_not_an_exchange() -> None:
    # Every segment within the 15 % tolerance of 500 ms, but cycles differ by 80-100 ms.
    wandering = _jittered([450, 550, 460, 540, 450, 550, 460], [540, 450, 550, 450, 540, 450, 540])
    steady = _jittered([490, 505, 495, 500, 490, 505, 495], [505, 490, 500, 495, 505, 490, 500])
    assert DisconnectToneDetector(["425/500,0/500"]).scan(wandering) is None
    assert DisconnectToneDetector(["425/500,0/500"]).scan(steady) is not None


def test_bursts_at_different_levels_are_not_an_exchange() -> None:
    bursts = []
    for index in range(8):
        level = -20.0 if index % 2 else -26.0
        bursts.append(render_tone(ToneSpec.cadenced((425,), (500, 500), level_dbm0=level), 1000))
    assert DisconnectToneDetector(["425/500,0/500"]).scan(_pcm(np.concatenate(bursts))) is None


def _note(
    frequency: float, ms: int, harmonics: tuple[float, ...], vibrato: float = 0.0
) -> np.ndarray:
    time = np.arange(ms * 8) / RATE
    phase = (
        2
        * np.pi
        * frequency
        * (time + vibrato / (2 * np.pi * 5.5) * np.sin(2 * np.pi * 5.5 * time))
    )
    signal = sum(a * np.sin(k * phase) for k, a in enumerate(harmonics, start=1))
    ramp = np.minimum(1.0, np.minimum(time, time[::-1]) / 0.01)
    return dbm0_to_peak(-15.0) * signal * ramp


@pytest.mark.parametrize(
    "harmonics",
    [(1.0, 0.35, 0.12), (1.0, 0.5, 0.33, 0.25), (1.0, 0.0, 0.33, 0.0, 0.2), (1.0, 0.7, 0.5, 0.4)],
    ids=["flute", "string", "clarinet", "organ"],
)
def test_an_instrument_playing_the_tone_in_its_exact_rhythm_is_not_the_tone(harmonics) -> None:
    # The worst case for talk-off: a note on the tone's frequency, 500 ms on, 500 ms off,
    # ten times. Only the harmonics tell it from the exchange (a flute's fundamental alone
    # explains 88 % of each frame, above the 70 % energy fraction).
    bar = np.concatenate([_note(440.0, 500, harmonics), np.zeros(4000)])
    samples = _pcm(np.tile(bar, 10))
    assert DisconnectToneDetector(["440/500,0/500"]).scan(samples) is None


def test_a_vowel_whose_harmonic_is_the_tone_sung_in_its_rhythm_is_not_the_tone() -> None:
    # Pitch 212.5 Hz: the second harmonic is 425 Hz, on the first formant.
    voice = (0.5, 1.0, 0.45, 0.2, 0.12, 0.3, 0.25, 0.1)
    bar = np.concatenate([_note(212.5, 500, voice, vibrato=0.01), np.zeros(4000)])
    assert DisconnectToneDetector(["425/500,0/500"]).scan(_pcm(np.tile(bar, 10))) is None


@pytest.mark.parametrize("country", ["eu", "uk", "us", "fr"])
def test_dtmf_keyed_in_a_steady_rhythm_is_not_a_disconnect_tone(country: str) -> None:
    plan = TONE_PLANS[country]
    digits = dtmf_samples("1" * 40 + "0123456789*#ABCD" * 3, on_ms=250, off_ms=250)
    detector = DisconnectToneDetector([plan.busy, plan.congestion])
    assert detector.scan(_pcm(digits)) is None


def test_a_pure_sine_in_the_tone_cadence_is_the_tone() -> None:
    # The limit of any detector (the DTMF detector's pure dyad): documented, not a bug.
    bar = np.concatenate([_note(440.0, 500, (1.0,)), np.zeros(4000)])
    assert DisconnectToneDetector(["440/500,0/500"]).scan(_pcm(np.tile(bar, 6))) is not None


# ----- streaming ----------------------------------------------------------------------------------


def test_the_single_frame_path_labels_frames_as_the_batch_path() -> None:
    rng = np.random.default_rng(4)
    tone = ToneSpec.cadenced((480, 620), (500, 500), level_dbm0=-25.0)
    samples = _pcm(render_tone(tone, 4000) + rng.normal(0, dbm0_to_rms(-45.0), 32000))
    detector = DisconnectToneDetector([tone, ToneSpec.cadenced((425,), (250, 250))])
    frames = samples.reshape(-1, FRAME)
    batch = detector.analyser.analyse(frames)
    for index, frame in enumerate(frames):
        label, power, harmonic, phasors = detector.analyser.analyse_frame(frame)
        assert label == batch.labels[index]
        assert power == pytest.approx(batch.tone_power[index], rel=1e-9, abs=1e-9)
        assert harmonic == pytest.approx(batch.harmonic_power[index], rel=1e-9, abs=1e-9)
        assert phasors[0] == pytest.approx(batch.phasors[index, 0], rel=1e-9, abs=1e-9)
    assert (batch.labels == 0).sum() == 100  # 2 s of bursts in 4 s


def test_detection_latches_until_reset() -> None:
    detector = DisconnectToneDetector(["425/250,0/250"])
    samples = _pcm(render_tone(ToneSpec.cadenced((425,), (250, 250)), 3000))
    assert detector.scan(samples) is not None
    assert detector.feed(np.zeros(FRAME, dtype=np.int16)) is True
    detector.reset()
    assert detector.feed(np.zeros(FRAME, dtype=np.int16)) is False


@pytest.mark.parametrize("text", ["!425/100,!0/100", "0/500"])
def test_tones_that_cannot_be_disconnect_tones_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        DisconnectToneDetector([text])


def test_criteria_refuse_a_single_cycle() -> None:
    with pytest.raises(ValueError, match="cycles"):
        DisconnectCriteria(cycles=1)


# ----- the silence last resort ----------------------------------------------------------------------


def _power(level_dbm0: float) -> float:
    return ZERO_DBM0_POWER * 10 ** (level_dbm0 / 10)


def test_silence_both_ways_for_the_maximum_expires_once() -> None:
    timer = SilenceTimer(1.0)  # 50 frames of 20 ms
    quiet = _power(-60.0)
    assert [timer.feed(quiet, quiet) for _ in range(49)] == [False] * 49
    assert timer.feed(quiet, quiet) is True
    assert timer.feed(_power(-10.0), quiet) is True, "latched until reset"
    timer.reset()
    assert timer.feed(quiet, quiet) is False


@pytest.mark.parametrize("talking", ["line", "office"])
def test_either_side_talking_restarts_the_silence(talking: str) -> None:
    timer = SilenceTimer(1.0)
    quiet, voice = _power(-60.0), _power(-30.0)
    for _ in range(40):
        timer.feed(quiet, quiet)
    timer.feed(voice, quiet) if talking == "line" else timer.feed(quiet, voice)
    assert [timer.feed(quiet, quiet) for _ in range(49)] == [False] * 49
    assert timer.feed(quiet, quiet) is True


def test_silence_timer_off_at_zero_and_threshold_above_a_noisy_floor() -> None:
    timer = SilenceTimer(0.0)
    assert not timer.enabled
    assert not any(timer.feed(0.0, 0.0) for _ in range(100_000 // 20))
    assert silence_threshold_dbm0(None) == -50.0
    assert silence_threshold_dbm0(-70.0) == -50.0
    assert silence_threshold_dbm0(-45.0) == -37.0
    hum = SilenceTimer(0.1, silence_threshold_dbm0(-45.0))
    assert all(hum.feed(_power(-40.0), 0.0) is (index >= 4) for index in range(6))


def test_frame_power_is_the_mean_square() -> None:
    frame = np.full(FRAME, 100, dtype=np.int16)
    assert frame_power(frame) == 10_000.0
