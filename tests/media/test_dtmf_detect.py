"""In-band DTMF detector: Q.24 accept/reject regions, timing, streaming, measurements."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.dtmf_detect import (
    KEYS,
    NO_DIGIT,
    DtmfCriteria,
    DtmfDetector,
    block_geometry,
    block_labels,
    detect_dtmf,
    judge,
    measure_blocks,
)
from firmware.media.levels import dbm0_to_peak
from firmware.media.mixer import Mixer
from firmware.media.tones import DTMF_FREQUENCIES, dtmf_samples

RATE = 8000
PAUSE = np.zeros(800)  # 100 ms


def _dual(
    key: str,
    ms: float,
    *,
    low_dbm0: float = -10.0,
    high_dbm0: float = -10.0,
    low_deviation: float = 0.0,
    high_deviation: float = 0.0,
    phase: float = 0.3,
) -> np.ndarray:
    """A rectangular dual tone (no ramps: the hardest case for the edges)."""
    low, high = DTMF_FREQUENCIES[key]
    time = np.arange(round(ms * RATE / 1000)) / RATE
    return dbm0_to_peak(low_dbm0) * np.sin(
        2 * np.pi * low * (1 + low_deviation) * time + phase
    ) + dbm0_to_peak(high_dbm0) * np.sin(2 * np.pi * high * (1 + high_deviation) * time + 2 * phase)


def _pcm(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def _sequence(tones: list[np.ndarray], pause: np.ndarray = PAUSE) -> np.ndarray:
    pieces = [pause]
    for tone in tones:
        pieces += [tone, pause]
    return _pcm(np.concatenate(pieces))


def _batch(samples: np.ndarray) -> str:
    return "".join(digit.digit for digit in detect_dtmf(samples))


def _stream(samples: np.ndarray, *, offset: int = 0, frame: int = 160) -> str:
    """Digits a streaming detector reports for the samples after ``offset`` samples of silence."""
    shifted = np.concatenate((np.zeros(offset, dtype=np.int16), samples))
    detector = DtmfDetector(RATE)
    digits = []
    for start in range(0, shifted.size, frame):
        digits += detector.feed(shifted[start : start + frame])
    return "".join(digits)


# ----- every key, where and when -----------------------------------------------------------


def test_every_key_is_reported_once_by_stream_and_batch():
    signal = _sequence([_dual(key, 80) for key in KEYS])
    assert _batch(signal) == KEYS
    assert _stream(signal) == KEYS


def test_positions_of_a_rectangular_tone_are_the_blocks_that_see_it():
    # Tone on samples [1000, 1640).  Blocks are 128 long every 32; a block counts when
    # >= 90 % of it is tone: the first is at 992 (120/128 covered; 960 has 88/128), the
    # fifth in a row starts at 1120 (reported when it ends, 1248), the last at 1504
    # (1536 has 104/128 covered), which ends at 1632.
    signal = _pcm(np.concatenate((np.zeros(1000), _dual("5", 80), np.zeros(1000))))
    (digit,) = detect_dtmf(signal)
    assert digit == ("5", 992, 1248, 1632)
    detector = DtmfDetector()
    reported_in = [
        index for index in range(20) if detector.feed(signal[index * 160 : (index + 1) * 160])
    ]
    assert reported_in == [1247 // 160]


def test_the_projects_own_generator_is_detected_at_40_ms_and_80_ms():
    assert _batch(dtmf_samples("0123456789*#ABCD")) == "0123456789*#ABCD"
    fast = dtmf_samples("0123456789*#ABCD", on_ms=40, off_ms=40)
    rng = np.random.default_rng(1)
    for offset in rng.integers(0, 400, 8):
        assert _stream(fast, offset=int(offset)) == "0123456789*#ABCD"


# ----- frequency deviation ---------------------------------------------------------------


@pytest.mark.parametrize("deviation", [0.015, -0.015])
def test_deviation_of_1_5_percent_is_accepted_on_every_key(deviation):
    tones = []
    for key in KEYS:
        tones.append(_dual(key, 60, low_deviation=deviation))
        tones.append(_dual(key, 60, high_deviation=deviation))
        tones.append(_dual(key, 60, low_deviation=deviation, high_deviation=-deviation))
        tones.append(_dual(key, 60, low_deviation=deviation, high_deviation=deviation))
    assert _batch(_sequence(tones)) == "".join(key * 4 for key in KEYS)


@pytest.mark.parametrize("deviation", [0.035, -0.035, 0.05, -0.05])
def test_deviation_of_3_5_percent_or_more_is_rejected_on_every_key(deviation):
    tones = []
    for key in KEYS:
        tones.append(_dual(key, 100, low_deviation=deviation))
        tones.append(_dual(key, 100, high_deviation=deviation))
        tones.append(_dual(key, 100, low_deviation=deviation, high_deviation=deviation))
    assert _batch(_sequence(tones)) == ""


def test_the_deviation_threshold_sits_between_the_two_q24_figures():
    accepted = _sequence([_dual("8", 60, high_deviation=0.022, low_deviation=-0.022)])
    rejected = _sequence(
        [_dual("8", 60, high_deviation=0.028), _dual("8", 60, low_deviation=-0.028)]
    )
    assert _batch(accepted) == "8"
    assert _batch(rejected) == ""


# ----- twist and level -----------------------------------------------------------------------


def test_twist_of_8_db_normal_and_4_db_reverse_is_accepted_on_every_key():
    tones = []
    for key in KEYS:
        tones.append(_dual(key, 60, low_dbm0=-8.0, high_dbm0=-16.0))  # high group 8 dB weaker
        tones.append(_dual(key, 60, low_dbm0=-14.0, high_dbm0=-10.0))  # high group 4 dB stronger
    assert _batch(_sequence(tones)) == "".join(key * 2 for key in KEYS)


def test_twist_beyond_the_thresholds_is_rejected_on_every_key():
    tones = []
    for key in KEYS:
        tones.append(_dual(key, 100, low_dbm0=-6.0, high_dbm0=-18.0))  # 12 dB normal
        tones.append(_dual(key, 100, low_dbm0=-16.0, high_dbm0=-8.0))  # 8 dB reverse
    assert _batch(_sequence(tones)) == ""


def test_tones_from_minus_30_dbm0_are_accepted_and_below_minus_42_rejected():
    loud = [_dual(key, 60, low_dbm0=-4.0, high_dbm0=-4.0) for key in "159D"]
    quiet = [_dual(key, 60, low_dbm0=-30.0, high_dbm0=-30.0) for key in "260#"]
    too_quiet = [
        _dual("3", 100, low_dbm0=-42.0, high_dbm0=-42.0),
        _dual("7", 100, low_dbm0=-20.0, high_dbm0=-43.0),  # the high tone alone too weak
        _dual("*", 100, low_dbm0=-45.0, high_dbm0=-40.0),
    ]
    assert _batch(_sequence(loud + quiet + too_quiet)) == "159D260#"


def test_a_dc_offset_does_not_hide_a_digit():
    signal = _sequence([_dual("4", 60), _dual("B", 60)]).astype(np.int32) + 3000
    assert _batch(signal.astype(np.int16)) == "4B"


# ----- durations, pauses, hysteresis --------------------------------------------------------


def test_40_ms_digits_with_40_ms_pauses_are_all_reported_in_order_at_any_frame_offset():
    digits = "1234567890"
    pause = np.zeros(320)
    signal = _sequence([_dual(key, 40, phase=index) for index, key in enumerate(digits)], pause)
    rng = np.random.default_rng(7)
    for offset in rng.integers(0, 1000, 25):
        assert _stream(signal, offset=int(offset)) == digits, f"offset {offset}"


def test_the_same_digit_twice_with_a_40_ms_pause_is_two_digits():
    signal = _sequence([_dual("7", 40), _dual("7", 40)], np.zeros(320))
    rng = np.random.default_rng(8)
    for offset in rng.integers(0, 1000, 10):
        assert _stream(signal, offset=int(offset)) == "77"


@pytest.mark.parametrize("ms", [10, 20, 25])
def test_tones_of_25_ms_or_less_are_rejected_at_any_offset(ms):
    signal = _sequence([_dual(key, ms) for key in KEYS])
    rng = np.random.default_rng(ms)
    for offset in rng.integers(0, 1000, 10):
        assert _stream(signal, offset=int(offset)) == ""


def test_a_digit_held_for_2_s_is_one_digit():
    assert _stream(_sequence([_dual("9", 2000)])) == "9"


def test_a_10_ms_dropout_in_a_long_tone_does_not_split_it():
    tone = _dual("0", 300)
    tone[1200:1280] = 0.0  # 10 ms of silence in the middle
    rng = np.random.default_rng(9)
    for offset in rng.integers(0, 1000, 10):
        assert _stream(_sequence([tone]), offset=int(offset)) == "0"


def test_a_different_digit_straight_after_another_is_reported():
    signal = _sequence([np.concatenate((_dual("1", 100), _dual("2", 100)))])
    assert _stream(signal) == "12"


# ----- noise and the mixer -------------------------------------------------------------------


def test_digits_in_white_noise_at_15_db_snr_are_all_reported():
    rng = np.random.default_rng(15)
    keys = "".join(rng.choice(list(KEYS), 120))
    pieces = [np.zeros(400)]
    for key in keys:
        twist = rng.uniform(-8.0, 4.0)
        low = rng.uniform(-28.0, -6.0 - max(twist, 0.0))
        tone = _dual(
            key,
            rng.uniform(40, 80),
            low_dbm0=low,
            high_dbm0=low + twist,
            low_deviation=rng.uniform(-0.015, 0.015),
            high_deviation=rng.uniform(-0.015, 0.015),
            phase=rng.uniform(0, 6),
        )
        slot = np.concatenate((tone, np.zeros(int(rng.uniform(40, 80) * 8))))
        power = (dbm0_to_peak(low) ** 2 + dbm0_to_peak(low + twist) ** 2) / 2
        pieces.append(slot + rng.normal(0, np.sqrt(power / 10**1.5), slot.size))
    signal = _pcm(np.concatenate(pieces))
    assert _batch(signal) == keys
    assert _stream(signal, offset=77) == keys


def test_stream_and_batch_agree_for_any_frame_length():
    rng = np.random.default_rng(21)
    tones = [
        _dual(key, rng.uniform(40, 120), phase=rng.uniform(0, 6)) for key in "147*2580369#ABCD"
    ]
    signal = _sequence(tones, np.zeros(400))
    noisy = _pcm(signal + rng.normal(0, 30, signal.size))
    assert _batch(noisy) == "147*2580369#ABCD"
    for frame in (37, 160, 333):
        assert _stream(noisy, frame=frame) == "147*2580369#ABCD"
    head = noisy[:12000]  # sample by sample is slow: the first 1.5 s (ten digits)
    assert _stream(head, frame=1) == _batch(head) == "147*258036"


def test_a_mixer_monitor_feeds_the_detector_frame_by_frame():
    signal = _sequence([_dual(key, 60) for key in "42#"])
    frames = signal[: signal.size // 160 * 160].reshape(-1, 160)
    mixer = Mixer(capacity=4)
    slot = mixer.allocate("line")
    detector = DtmfDetector()
    heard: list[str] = []
    mixer.set_monitor(slot, lambda frame: heard.extend(detector.feed(frame)))

    class Line:
        index = 0

        def read_into(self, inputs: np.ndarray) -> None:
            if self.index < len(frames):
                inputs[slot] = frames[self.index]
            self.index += 1

        def write_from(self, outputs: np.ndarray) -> None:
            return None

    mixer.add_endpoint(Line())
    for _ in range(len(frames) + 2):
        mixer.tick()  # the mixer reuses its input rows: the detector must copy what it keeps
    assert "".join(heard) == "42#"


def test_current_digit_and_reset():
    detector = DtmfDetector()
    tone = _pcm(_dual("6", 200))
    reported = detector.feed(tone[:800])
    assert reported == ["6"]
    assert detector.current_digit == "6"
    detector.reset()
    assert detector.current_digit is None
    assert detector.feed(tone[800:]) == ["6"]  # heard afresh after a reset


# ----- the measurements and each criterion ---------------------------------------------------


def _one_block(samples: np.ndarray):
    length, _ = block_geometry()
    return measure_blocks(np.asarray(samples[:length], dtype=float)[np.newaxis])


def test_measurements_of_a_clean_block():
    measured = _one_block(
        _dual("6", 16, low_dbm0=-12.0, high_dbm0=-10.0, low_deviation=0.01, high_deviation=-0.012)
    )
    assert (measured.row[0], measured.column[0]) == (1, 2)  # 770 Hz, 1477 Hz: key 6
    assert measured.row_deviation[0] == pytest.approx(0.01, abs=0.0015)
    assert measured.column_deviation[0] == pytest.approx(-0.012, abs=0.0015)
    assert measured.row_level_dbm0[0] == pytest.approx(-12.0, abs=0.2)
    assert measured.column_level_dbm0[0] == pytest.approx(-10.0, abs=0.2)
    assert measured.twist_db[0] == pytest.approx(2.0, abs=0.3)
    assert measured.energy_fraction[0] > 0.99
    assert judge(measured, DtmfCriteria())[0] == KEYS.index("6")


def test_a_third_tone_breaks_the_energy_fraction():
    base = _dual("2", 16)
    time = np.arange(base.size) / RATE
    strong_third = base + dbm0_to_peak(-10.0) * np.sin(2 * np.pi * 500 * time)
    weak_third = base + dbm0_to_peak(-30.0) * np.sin(2 * np.pi * 500 * time)
    assert _one_block(strong_third).energy_fraction[0] == pytest.approx(2 / 3, abs=0.05)
    assert judge(_one_block(strong_third), DtmfCriteria())[0] == NO_DIGIT
    assert judge(_one_block(weak_third), DtmfCriteria())[0] == KEYS.index("2")


@pytest.mark.parametrize(("key", "tone"), [("1", 0), ("1", 1), ("#", 0), ("#", 1)])
def test_a_strong_second_harmonic_is_rejected(key, tone):
    frequency = DTMF_FREQUENCIES[key][tone]
    base = _dual(key, 16)
    time = np.arange(base.size) / RATE
    harmonic = np.sin(2 * np.pi * 2 * frequency * time)
    strong = base + dbm0_to_peak(-16.0) * harmonic  # 6 dB under its fundamental
    faint = base + dbm0_to_peak(-36.0) * harmonic
    measured = _one_block(strong)
    harmonic_db = (measured.row_harmonic_db, measured.column_harmonic_db)[tone][0]
    assert harmonic_db == pytest.approx(-6.0, abs=1.0)
    assert judge(measured, DtmfCriteria())[0] == NO_DIGIT
    assert judge(_one_block(faint), DtmfCriteria())[0] == KEYS.index(key)


def test_a_note_and_its_octave_is_not_a_digit():
    # G#5 (830.6 Hz, 852 Hz - 2.5 %) with its second harmonic (1661 Hz, 1633 Hz + 1.7 %):
    # both within the deviation threshold, but the column tone is exactly twice the row
    # tone, which no keypad produces inside the accepted 1.5 %.
    time = np.arange(4000) / RATE
    note = dbm0_to_peak(-15.0) * np.sin(2 * np.pi * 830.6 * time) + dbm0_to_peak(-24.0) * np.sin(
        2 * np.pi * 1661.2 * time
    )
    signal = _sequence([note])
    labels = block_labels(signal)
    assert not (labels >= 0).any()
    assert _batch(signal) == ""


def test_the_gate_never_drops_a_block_the_full_measurement_accepts():
    rng = np.random.default_rng(33)
    pieces = []
    for _ in range(300):
        key = str(rng.choice(list(KEYS)))
        twist = rng.uniform(-11.0, 7.0)
        low = rng.uniform(-38.0, -6.0)
        tone = _dual(
            key,
            rng.uniform(20, 60),
            low_dbm0=low,
            high_dbm0=low + twist,
            low_deviation=rng.uniform(-0.03, 0.03),
            high_deviation=rng.uniform(-0.03, 0.03),
            phase=rng.uniform(0, 6),
        )
        power = (dbm0_to_peak(low) ** 2 + dbm0_to_peak(low + twist) ** 2) / 2
        pieces.append(tone + rng.normal(0, np.sqrt(power / 10 ** rng.uniform(1.0, 3.0)), tone.size))
        pieces.append(np.zeros(int(rng.integers(0, 300))))
    signal = _pcm(np.concatenate(pieces))
    length, hop = block_geometry()
    blocks = np.lib.stride_tricks.sliding_window_view(signal.astype(float), length)[::hop]
    full = judge(measure_blocks(blocks), DtmfCriteria())
    gated = block_labels(signal)
    assert (full >= 0).sum() > 1000
    np.testing.assert_array_equal(gated, full)


def test_criteria_are_checked():
    with pytest.raises(ValueError, match="max_deviation"):
        DtmfCriteria(max_deviation=0.05)
    with pytest.raises(ValueError, match="min_energy_fraction"):
        DtmfCriteria(min_energy_fraction=1.5)
    with pytest.raises(ValueError, match="at least 1"):
        DtmfCriteria(min_tone_blocks=0)
    with pytest.raises(ValueError, match="1-D"):
        DtmfDetector().feed(np.zeros((2, 160)))


def test_looser_timing_criteria_change_what_is_reported():
    short = _sequence([_dual("3", 25)])
    assert _batch(short) == ""
    eager = detect_dtmf(short, criteria=DtmfCriteria(min_tone_blocks=2))
    assert [digit.digit for digit in eager] == ["3"]


def test_wideband_audio_at_16_khz_uses_the_same_durations():
    fast = dtmf_samples("159#", on_ms=40, off_ms=40, sample_rate=16000)
    short = dtmf_samples("159#", on_ms=25, off_ms=40, sample_rate=16000)
    assert block_geometry(16000) == (256, 64)
    assert [digit.digit for digit in detect_dtmf(fast, 16000)] == list("159#")
    assert detect_dtmf(short, 16000) == []
    detector = DtmfDetector(16000)
    heard = [
        digit
        for start in range(0, fast.size, 320)
        for digit in detector.feed(fast[start : start + 320])
    ]
    assert heard == list("159#")
