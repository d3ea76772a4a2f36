"""The disconnect tone behind the line's echo canceller, with the office user talking over
it: bursts broken by speech on top (not by the tone's absence), canceller residue in the
gaps, frames the canceller's suppressor muted. Two recorded bench events (missed before the
detector followed the tone under other sound) and one synthetic case per mechanism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware.media.disconnect import DisconnectToneDetector
from firmware.media.levels import dbm0_to_rms
from firmware.media.tones import ToneSpec, render_tone

RATE = 8000
FRAME = 160
DATA = Path(__file__).parent / "data"
LEAD_S = 1.0  # the recordings (and the synthetic lines) start 1 s before the tone


def _pcm(samples: np.ndarray) -> np.ndarray:
    samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return samples[: samples.size // FRAME * FRAME]


def _seconds(detector: DisconnectToneDetector, samples: np.ndarray, lead_s: float) -> float | None:
    detection = detector.scan(samples)
    return None if detection is None else (detection.frame + 1) * FRAME / RATE - lead_s


# ----- recorded: bench/disconnect_detector.py, seed 6, the canceller's output ---------------------


@pytest.mark.parametrize(
    "name, busy, congestion, latest_s",
    [
        # -13.5 dBm0 tone, office speech -16.5 dBm0, ERL 11 dB: a loud syllable over a
        # burst drops the fit's energy fraction to 0.1-0.2 in 4 frames, the tone unchanged.
        (
            "disconnect_echo_masked_bursts",
            "427/360,0/260,427/230,0/650",
            "439/165,0/205,439/315,0/330",
            4 * 1.5 + 0.1,
        ),
        # -22 dBm0 tone joined mid-cycle, ERL 19 dB: a voiced echo at -41 dBm0 fits the tone
        # for 7 frames inside a gap, splitting it, in every 3-cycle window of the 8 s.
        (
            "disconnect_echo_faint_run_in_gap",
            "450/170,0/330,450/390,0/650",
            "424/235,0/320",
            4 * 1.54 + 0.1,
        ),
    ],
)
def test_a_recorded_event_with_speech_echoed_over_the_tone_is_detected(
    name: str, busy: str, congestion: str, latest_s: float
) -> None:
    samples = np.load(DATA / f"{name}.npy")
    detector = DisconnectToneDetector([busy, congestion])
    seconds = _seconds(detector, samples, LEAD_S)
    assert seconds is not None, f"{name}: missed"
    assert detector.detection is not None and detector.detection.tone == 0
    assert 0 < seconds <= latest_s, f"{name}: {seconds:.2f} s"


# ----- synthetic: one mechanism at a time ---------------------------------------------------------

TONE = ToneSpec.cadenced((425,), (500, 500), level_dbm0=-25.0)
CONFIGURED = "425/500,0/500"


def _tone_with(extra: list[tuple[int, int, np.ndarray]], seconds: float = 6.0) -> np.ndarray:
    """``LEAD_S`` of a quiet line, then the tone over a -60 dBm0 floor, with ``extra``
    (start ms in the cycle, length ms, the sound) added in every cycle."""
    rng = np.random.default_rng(7)
    lead = int(LEAD_S * RATE)
    line = np.concatenate([np.zeros(lead), render_tone(TONE, int(seconds * 1000))])
    line += rng.normal(0.0, dbm0_to_rms(-60.0), line.size)
    for cycle in range(int(seconds)):
        for start_ms, length_ms, signal in extra:
            first = lead + (cycle * 1000 + start_ms) * RATE // 1000
            line[first : first + length_ms * RATE // 1000] += signal[: length_ms * RATE // 1000]
    return _pcm(line)


def _noise(level_dbm0: float, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, dbm0_to_rms(level_dbm0), RATE)


def test_noise_over_the_middle_of_every_burst_does_not_break_it() -> None:
    # 120 ms of broadband sound 6 dB over the tone: the fit explains 20 % of those frames.
    samples = _tone_with([(200, 120, _noise(-19.0))])
    seconds = _seconds(DisconnectToneDetector([CONFIGURED]), samples, LEAD_S)
    assert seconds is not None and 2.9 <= seconds <= 3.1


def test_noise_filling_every_gap_does_not_join_the_bursts() -> None:
    # The same sound over each whole gap: the tone is absent under it, so the gap stays.
    samples = _tone_with([(500, 500, _noise(-19.0))])
    seconds = _seconds(DisconnectToneDetector([CONFIGURED]), samples, LEAD_S)
    assert seconds is not None and 2.9 <= seconds <= 3.1


def _sine(level_dbm0: float, frequency: float = 425.0) -> np.ndarray:
    return (
        np.sqrt(2)
        * dbm0_to_rms(level_dbm0)
        * np.sin(2 * np.pi * frequency * np.arange(RATE) / RATE)
    )


def test_a_faint_residue_of_the_tone_in_every_gap_stays_gap() -> None:
    # 120 ms of the tone's frequency 18 dB under it (what an adapted canceller leaves).
    samples = _tone_with([(700, 120, _sine(-43.0))])
    seconds = _seconds(DisconnectToneDetector([CONFIGURED]), samples, LEAD_S)
    assert seconds is not None and 2.9 <= seconds <= 4.0


def test_a_burst_in_the_gap_at_the_tones_level_is_another_cadence() -> None:
    # The same residue 3 dB under the tone is a burst: 500 / 200 / 120 / 180 is not busy.
    samples = _tone_with([(700, 120, _sine(-28.0))])
    assert DisconnectToneDetector([CONFIGURED]).scan(samples) is None


def test_a_muted_frame_in_every_burst_with_a_weak_frame_beside_it_is_not_a_decay() -> None:
    # The canceller's suppressor replaced one frame by comfort noise and faded the one
    # before (6 dB): the frames next to a hole are edges, left out of the flatness check.
    lead = int(LEAD_S * RATE)
    line = np.concatenate([np.zeros(lead), render_tone(TONE, 6000)])
    for cycle in range(6):
        first = lead + (cycle * 1000 + 240) * RATE // 1000
        line[first : first + FRAME] *= 0.5
        line[first + FRAME : first + 2 * FRAME] = 0.0
    samples = _pcm(line + np.random.default_rng(5).normal(0.0, dbm0_to_rms(-60.0), line.size))
    seconds = _seconds(DisconnectToneDetector([CONFIGURED]), samples, LEAD_S)
    assert seconds is not None and 2.9 <= seconds <= 3.1
